/* The compiled flat path of flageval._keys: canonical keys of flat contexts.
 *
 * FlatKeys(encode, in_order, fallback).key(attrs) returns the bytes the pure-Python
 * ContextKeys returns (and so flageval._prune.canonical's): computed here for an exact
 * dict whose keys are exact str and whose values are exact str, bool, finite float or
 * int within 64 bits; fallback(attrs) for anything else. The rules are _prune's: a key
 * over 256 characters, "targetingKey", "targeting_key" and a string value over 256
 * characters are skipped, then the keys are sorted and the first 256 kept. The bytes
 * are msgspec's: `encode` is the `encode_into` of the encoder that sorts the keys;
 * `in_order` the same of an encoder that does not, used when the keys come sorted
 * already (the same bytes, no sort). A lone
 * surrogate (msgspec refuses it) goes to the fallback, which replaces it.
 *
 * Within one batch (until clear()), a context whose keys and values are the very
 * objects, in the same order, of a context keyed earlier in the batch gets that key
 * back after one read of its dict's entry table and a comparison of pointers: the SDK
 * copies the caller's attribute values by reference, so the evaluations of one request
 * share them. The table holds the earlier dict itself and its version (PEP 509): while
 * the version is unchanged the dict holds those very objects, so no address in it has
 * been reused; clear() lets the dicts go. This needs the entry table of CPython 3.11
 * and 3.12, checked against PyDict_Next when the module loads; elsewhere (or if the
 * check fails) every context is scanned and encoded.
 *
 * No Python code of the application runs here: exact types only; the fallback is
 * ContextKeys' own method.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#define MAX_FIELDS 256
#define MAX_CHARS 256    /* keys and string values */
#define MAX_ENTRIES 4096 /* more attributes: the fallback raises ContextTooLarge */
#define TABLE_ENTRIES 4096

/* The SHA-256 of this file, given by the build (hatch_build.py): flageval._compiled
 * finds the marker in the built file and refuses a module whose digest is not that of
 * the source beside it, before loading it; SOURCE_SHA256 is the digest, in the module. */
#ifndef CKEYS_SOURCE_SHA256
#define CKEYS_SOURCE_SHA256 "unknown"
#endif
#define SOURCE_MARKER "flageval._ckeys source sha256 "
#if defined(__GNUC__)
__attribute__((used))
#endif
static const char source_marker[] = SOURCE_MARKER CKEYS_SOURCE_SHA256;

typedef struct {
    Py_uhash_t hash;
    PyObject *dict;     /* strong; NULL: a free slot */
    uint64_t version;   /* the dict's when it was keyed: while unchanged, so are ... */
    Py_ssize_t n;       /* ... its size and ... */
    PyObject **entries; /* ... its entry table, n (key, value) pairs without a hole */
    PyObject *result;   /* strong */
} Entry;

typedef struct {
    PyObject_HEAD
    PyObject *encode;
    PyObject *in_order;
    PyObject *fallback;
    PyObject *empty;
    PyObject *excluded_a;
    PyObject *excluded_b;
    PyObject **buf; /* 2 * MAX_ENTRIES borrowed pointers: the context being keyed */
    PyObject *out;  /* a bytearray msgspec encodes into (no buffer made per encoding) */
    Entry *table;
    Py_ssize_t slots; /* a power of two, or 0 before the first entry */
    Py_ssize_t used;
    long long hits;
} FlatKeys;

typedef struct {
    PyObject *key;
    PyObject *value;
} StrEntry;

/* -- the dict's entry table (CPython 3.11 and 3.12) -------------------------------- */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
typedef struct {
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size;
    uint8_t dk_log2_index_bytes;
    uint8_t dk_kind;
    uint32_t dk_version;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
} KeysTable;
#define STR_KEYS_KIND 1
static int direct = 0; /* set by check_direct() when the module loads */

/* The (key, value) entries of a combined table of str keys, deleted ones included
 * (value NULL); NULL for any other dict, or when the layout was not confirmed. */
static StrEntry *
str_entries(PyObject *attrs, Py_ssize_t *count)
{
    PyDictObject *mp = (PyDictObject *)attrs;
    KeysTable *keys = (KeysTable *)mp->ma_keys;
    if (!direct || mp->ma_values != NULL || keys->dk_kind != STR_KEYS_KIND) {
        return NULL;
    }
    *count = keys->dk_nentries;
    return (StrEntry *)(keys->dk_indices + ((size_t)1 << keys->dk_log2_index_bytes));
}

/* Changes whenever the dict does. */
static inline uint64_t
version(PyObject *attrs)
{
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    return ((PyDictObject *)attrs)->ma_version_tag;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}
#else
static StrEntry *
str_entries(PyObject *attrs, Py_ssize_t *count)
{
    return NULL;
}

static inline uint64_t
version(PyObject *attrs)
{
    return 0;
}
#endif

/* One value's share of a context's identity hash: independent of the others (no chain
 * of multiplications through the loop), summed, then mixed once. */
static inline Py_uhash_t
share(const void *value, Py_uhash_t i)
{
    Py_uhash_t v = (Py_uhash_t)(uintptr_t)value;
    return (v ^ (v >> 17)) * (0x9E3779B97F4A7C15ULL + 2 * i);
}

static inline Py_uhash_t
finish(Py_uhash_t h)
{
    h = (h ^ (h >> 31)) * 0xC2B2AE3D27D4EB4FULL;
    return h ^ (h >> 29);
}

/* The dict's keys and values as 2n borrowed pointers in order (key, value, ...): its
 * own entry table when that has no deleted entry, else copied into `buf`. *hash mixes
 * the values' addresses (keys mostly repeat from one context to the next; a hit
 * compares them all anyway). Reads the dict's entries and none of the objects. */
static PyObject **
pointers(PyObject **buf, PyObject *attrs, Py_ssize_t n, Py_uhash_t *hash)
{
    Py_ssize_t pos = 0, i = 0, count = 0;
    PyObject *key, *value;
    Py_uhash_t h = (Py_uhash_t)n * 0x9E3779B97F4A7C15ULL;
    StrEntry *entries = str_entries(attrs, &count);
    if (entries != NULL && count == n) {
        for (Py_ssize_t e = 0; e < n; e++) {
            h += share(entries[e].value, (Py_uhash_t)e);
        }
        *hash = finish(h);
        return (PyObject **)entries;
    }
    if (entries != NULL) {
        for (Py_ssize_t e = 0; e < count && i < 2 * n; e++) {
            if (entries[e].value != NULL) { /* NULL: a deleted entry */
                buf[i++] = entries[e].key;
                buf[i++] = entries[e].value;
            }
        }
    }
    else {
        while (i < 2 * n && PyDict_Next(attrs, &pos, &key, &value)) {
            buf[i++] = key;
            buf[i++] = value;
        }
    }
    for (; i < 2 * n; i++) { /* cannot happen: the size was read just before */
        buf[i] = Py_None;
    }
    for (i = 1; i < 2 * n; i += 2) {
        h += share(buf[i], (Py_uhash_t)(i / 2));
    }
    *hash = finish(h);
    return buf;
}

/* -- the rules --------------------------------------------------------------------- */
static int
excluded(FlatKeys *self, PyObject *key)
{
    return PyUnicode_Compare(key, self->excluded_a) == 0 ||
           PyUnicode_Compare(key, self->excluded_b) == 0;
}

static inline int
skipped_key(FlatKeys *self, PyObject *key)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(key);
    return len > MAX_CHARS || ((len == 12 || len == 13) && excluded(self, key));
}

/* An int that fits in 64 bits (and so prints in at most 20 characters). */
static inline int
small_int(PyObject *value)
{
#if PY_VERSION_HEX < 0x030C0000
    Py_ssize_t size = Py_SIZE(value); /* 30-bit digits, signed: two fit in 60 bits */
    if (size >= -2 && size <= 2) {
        return 1;
    }
#endif
    int overflow;
    (void)PyLong_AsLongLongAndOverflow(value, &overflow);
    return !overflow;
}

/* 1: `items` (key, value, ...) are a flat context of plain values, with *prune set
 * when anything is to be skipped or cut and *sorted when the keys come in sorted order
 * (code points, as msgspec and sorted() order them); 0: not one (the fallback's). */
static int
scan(FlatKeys *self, PyObject **items, Py_ssize_t n, int *prune, int *sorted)
{
    int cut = n > MAX_FIELDS, ordered = 1;
    PyObject *before = NULL;
    for (Py_ssize_t i = 0; i < 2 * n; i += 2) {
        PyObject *key = items[i], *value = items[i + 1];
        PyTypeObject *t = Py_TYPE(value);
        if (!PyUnicode_CheckExact(key)) {
            return 0;
        }
        if (t == &PyUnicode_Type) {
            cut |= PyUnicode_GET_LENGTH(value) > MAX_CHARS;
        }
        else if (t == &PyLong_Type) {
            if (!small_int(value)) {
                return 0; /* past 64 bits: the Python path measures its digits */
            }
        }
        else if (t == &PyFloat_Type) {
            if (!isfinite(PyFloat_AS_DOUBLE(value))) {
                return 0; /* NaN and infinities become text: the Python path's */
            }
        }
        else if (t != &PyBool_Type) {
            return 0;
        }
        cut |= skipped_key(self, key);
        if (ordered && before != NULL) {
            if (PyUnicode_IS_COMPACT_ASCII(before) && PyUnicode_IS_COMPACT_ASCII(key)) {
                Py_ssize_t la = PyUnicode_GET_LENGTH(before), lb = PyUnicode_GET_LENGTH(key);
                int c = memcmp(PyUnicode_DATA(before), PyUnicode_DATA(key),
                               (size_t)(la < lb ? la : lb));
                ordered = c < 0 || (c == 0 && la < lb);
            }
            else {
                ordered = PyUnicode_Compare(before, key) < 0;
            }
        }
        before = key;
    }
    *prune = cut;
    *sorted = ordered;
    return 1;
}

static PyObject *
encode(FlatKeys *self, PyObject *dict, int sorted)
{
    PyObject *args[2] = {dict, self->out};
    PyObject *done = PyObject_Vectorcall(sorted ? self->in_order : self->encode, args, 2, NULL);
    if (done == NULL) {
        return NULL;
    }
    Py_DECREF(done);
    return PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self->out),
                                     PyByteArray_GET_SIZE(self->out));
}

/* The skipped entries left out, then the first 256 keys in sorted order; encoded.
 * `items` are borrowed from `attrs` (maybe its very table): copied and referenced here
 * first, since building dicts may run the collector, and with it anything. */
static PyObject *
pruned(FlatKeys *self, PyObject **from, Py_ssize_t n)
{
    PyObject *kept = NULL, *keys = NULL, *cut = NULL, *result = NULL;
    PyObject **items = self->buf;
    if (from != items) {
        memcpy(items, from, sizeof(PyObject *) * 2 * (size_t)n);
    }
    for (Py_ssize_t i = 0; i < 2 * n; i++) {
        Py_INCREF(items[i]);
    }
    if ((kept = PyDict_New()) == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < 2 * n; i += 2) {
        PyObject *key = items[i], *value = items[i + 1];
        if (skipped_key(self, key) ||
            (PyUnicode_CheckExact(value) && PyUnicode_GET_LENGTH(value) > MAX_CHARS)) {
            continue;
        }
        if (PyDict_SetItem(kept, key, value) < 0) {
            goto done;
        }
    }
    if (PyDict_GET_SIZE(kept) == 0) {
        result = Py_NewRef(self->empty);
    }
    else if (PyDict_GET_SIZE(kept) <= MAX_FIELDS) {
        result = encode(self, kept, 0);
    }
    else if ((keys = PyDict_Keys(kept)) != NULL && PyList_Sort(keys) == 0 &&
             (cut = PyDict_New()) != NULL) {
        for (Py_ssize_t i = 0; i < MAX_FIELDS; i++) {
            PyObject *key = PyList_GET_ITEM(keys, i);
            PyObject *value = PyDict_GetItemWithError(kept, key);
            if (value == NULL || PyDict_SetItem(cut, key, value) < 0) {
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_RuntimeError, "a kept key went missing");
                }
                goto done;
            }
        }
        result = encode(self, cut, 1);
    }
done:
    Py_XDECREF(cut);
    Py_XDECREF(keys);
    Py_XDECREF(kept);
    for (Py_ssize_t i = 0; i < 2 * n; i++) {
        Py_DECREF(items[i]);
    }
    return result;
}

/* -- the batch's table ------------------------------------------------------------- */
static int
grow(FlatKeys *self)
{
    Py_ssize_t slots = self->slots ? self->slots * 2 : 1024;
    Entry *table = PyMem_Calloc((size_t)slots, sizeof(Entry));
    if (table == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->slots; i++) {
        Entry *e = &self->table[i];
        if (e->dict != NULL) {
            Py_ssize_t j = (Py_ssize_t)(e->hash & (Py_uhash_t)(slots - 1));
            while (table[j].dict != NULL) {
                j = (j + 1) & (slots - 1);
            }
            table[j] = *e;
        }
    }
    PyMem_Free(self->table);
    self->table = table;
    self->slots = slots;
    return 0;
}

/* A hit: a dict of this batch, unchanged since, whose entries are the probe's. */
static PyObject *
find(FlatKeys *self, Py_uhash_t h, PyObject **items, Py_ssize_t n)
{
    Py_ssize_t j = (Py_ssize_t)(h & (Py_uhash_t)(self->slots - 1));
    for (Entry *e = &self->table[j]; e->dict != NULL; e = &self->table[j]) {
        if (e->hash == h && e->n == n && version(e->dict) == e->version &&
            memcmp(e->entries, items, sizeof(PyObject *) * 2 * (size_t)n) == 0) {
            return e->result;
        }
        j = (j + 1) & (self->slots - 1);
    }
    return NULL;
}

/* Remember `attrs` (at `tag`, with no deleted entry, so its entry table is its
 * pointers in order) -> `result` for the rest of the batch, if there is room. */
static void
store(FlatKeys *self, Py_uhash_t h, PyObject *attrs, uint64_t tag, PyObject *result)
{
    Py_ssize_t count;
    StrEntry *entries = str_entries(attrs, &count);
    if (self->used >= TABLE_ENTRIES || entries == NULL || count != PyDict_GET_SIZE(attrs) ||
        (2 * (self->used + 1) > self->slots && grow(self) < 0)) {
        PyErr_Clear();
        return;
    }
    Py_ssize_t j = (Py_ssize_t)(h & (Py_uhash_t)(self->slots - 1));
    while (self->table[j].dict != NULL) {
        j = (j + 1) & (self->slots - 1);
    }
    self->table[j] =
        (Entry){h, Py_NewRef(attrs), tag, count, (PyObject **)entries, Py_NewRef(result)};
    self->used++;
}

/* -- the type ---------------------------------------------------------------------- */
static PyObject *
FlatKeys_key(FlatKeys *self, PyObject *attrs)
{
    int prune = 0, sorted = 0;
    Py_ssize_t n;
    if (self->buf == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FlatKeys.__init__ was not called");
        return NULL;
    }
    if (!PyDict_CheckExact(attrs) || (n = PyDict_GET_SIZE(attrs)) > MAX_ENTRIES) {
        return PyObject_CallOneArg(self->fallback, attrs);
    }
    if (n == 0) {
        return Py_NewRef(self->empty);
    }
    uint64_t tag = version(attrs);
    Py_uhash_t h;
    PyObject **items = pointers(self->buf, attrs, n, &h);
    PyObject *found = self->used ? find(self, h, items, n) : NULL;
    if (found != NULL) {
        self->hits++;
        return Py_NewRef(found);
    }
    if (!scan(self, items, n, &prune, &sorted)) {
        return PyObject_CallOneArg(self->fallback, attrs);
    }
    PyObject *result = prune ? pruned(self, items, n) : encode(self, attrs, sorted);
    if (result == NULL) {
        PyErr_Clear(); /* a lone surrogate: msgspec refuses it, the fallback replaces it */
        return PyObject_CallOneArg(self->fallback, attrs);
    }
    self->hits++;
    if (tag != 0 && version(attrs) == tag) { /* unchanged while it was encoded */
        store(self, h, attrs, tag, result);
    }
    return result;
}

static PyObject *
FlatKeys_clear(FlatKeys *self, PyObject *Py_UNUSED(ignored))
{
    for (Py_ssize_t i = 0; self->used && i < self->slots; i++) {
        Entry *e = &self->table[i];
        if (e->dict != NULL) {
            PyObject *dict = e->dict, *result = e->result;
            *e = (Entry){0, NULL, 0, 0, NULL, NULL};
            self->used--;
            Py_DECREF(dict);
            Py_DECREF(result);
        }
    }
    Py_RETURN_NONE;
}

static int
FlatKeys_init(FlatKeys *self, PyObject *args, PyObject *kwds)
{
    PyObject *encode, *in_order, *fallback;
    static char *names[] = {"encode", "in_order", "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:FlatKeys", names, &encode, &in_order,
                                     &fallback)) {
        return -1;
    }
    if (!PyCallable_Check(encode) || !PyCallable_Check(in_order) ||
        !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "encode, in_order and fallback must be callable");
        return -1;
    }
    Py_XSETREF(self->encode, Py_NewRef(encode));
    Py_XSETREF(self->in_order, Py_NewRef(in_order));
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    if (self->buf == NULL) {
        self->empty = PyBytes_FromStringAndSize(NULL, 0);
        self->excluded_a = PyUnicode_InternFromString("targetingKey");
        self->excluded_b = PyUnicode_InternFromString("targeting_key");
        if (!self->empty || !self->excluded_a || !self->excluded_b) {
            return -1;
        }
        self->out = PyByteArray_FromStringAndSize(NULL, 0);
        if (self->out == NULL) {
            return -1;
        }
        self->buf = PyMem_Malloc(sizeof(PyObject *) * 2 * MAX_ENTRIES);
        if (self->buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static int
FlatKeys_traverse(FlatKeys *self, visitproc visit, void *arg)
{
    Py_VISIT(self->encode);
    Py_VISIT(self->in_order);
    Py_VISIT(self->fallback);
    for (Py_ssize_t i = 0; self->used && i < self->slots; i++) {
        Py_VISIT(self->table[i].dict);
    }
    return 0;
}

static int
FlatKeys_tp_clear(FlatKeys *self)
{
    FlatKeys_clear(self, NULL);
    Py_CLEAR(self->encode);
    Py_CLEAR(self->in_order);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
FlatKeys_dealloc(FlatKeys *self)
{
    PyObject_GC_UnTrack(self);
    FlatKeys_tp_clear(self);
    PyMem_Free(self->table);
    PyMem_Free(self->buf);
    Py_XDECREF(self->empty);
    Py_XDECREF(self->out);
    Py_XDECREF(self->excluded_a);
    Py_XDECREF(self->excluded_b);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
FlatKeys_get_hits(FlatKeys *self, void *closure)
{
    return PyLong_FromLongLong(self->hits);
}

static PyObject *
FlatKeys_get_held(FlatKeys *self, void *closure)
{
    return PyLong_FromSsize_t(self->used);
}

static PyMethodDef FlatKeys_methods[] = {
    {"key", (PyCFunction)FlatKeys_key, METH_O,
     "key(attrs) -> bytes: the canonical key (the fallback's for a context not flat)."},
    {"clear", (PyCFunction)FlatKeys_clear, METH_NOARGS,
     "Forget the batch's contexts (and let their dicts go)."},
    {NULL},
};

static PyGetSetDef FlatKeys_getset[] = {
    {"hits", (getter)FlatKeys_get_hits, NULL, "keys computed or found here", NULL},
    {"held", (getter)FlatKeys_get_held, NULL, "contexts remembered for this batch", NULL},
    {NULL},
};

static PyTypeObject FlatKeysType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flageval._ckeys.FlatKeys",
    .tp_doc = "Canonical keys of flat contexts (see flageval._keys).",
    .tp_basicsize = sizeof(FlatKeys),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FlatKeys_init,
    .tp_dealloc = (destructor)FlatKeys_dealloc,
    .tp_traverse = (traverseproc)FlatKeys_traverse,
    .tp_clear = (inquiry)FlatKeys_tp_clear,
    .tp_methods = FlatKeys_methods,
    .tp_getset = FlatKeys_getset,
};

/* -- loading ----------------------------------------------------------------------- */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
/* The entry table read directly must give what PyDict_Next gives (str keys with
 * deleted entries, and a copy), must refuse a dict of other keys, and the version must
 * change with the dict; else `direct` stays 0. */
static int
check_direct(void)
{
    PyObject *d = PyDict_New(), *copy = NULL, *other = PyDict_New();
    PyObject *via_next[2 * 40], *via_table[2 * 40];
    int ok = 0;
    if (d == NULL || other == NULL) {
        goto done;
    }
    for (int i = 0; i < 40; i++) {
        PyObject *k = PyUnicode_FromFormat("k%d", i), *v = PyLong_FromLong(i);
        int err = k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (err) {
            goto done;
        }
    }
    uint64_t before = version(d);
    if (PyDict_DelItemString(d, "k3") < 0 || PyDict_DelItemString(d, "k17") < 0 ||
        version(d) == before || (copy = PyDict_Copy(d)) == NULL ||
        PyDict_SetItem(other, Py_None, Py_None) < 0) {
        goto done;
    }
    direct = 1;
    PyObject *dicts[2] = {d, copy};
    for (int j = 0; j < 2; j++) {
        Py_ssize_t n = PyDict_GET_SIZE(dicts[j]), count = 0, pos = 0, i = 0;
        PyObject *key, *value;
        if (n != 38 || str_entries(dicts[j], &count) == NULL || count < n) {
            goto done;
        }
        while (PyDict_Next(dicts[j], &pos, &key, &value)) {
            via_next[i++] = key;
            via_next[i++] = value;
        }
        Py_uhash_t h;
        PyObject **got = pointers(via_table, dicts[j], n, &h);
        if (i != 2 * n || memcmp(via_next, got, sizeof(PyObject *) * 2 * (size_t)n)) {
            goto done;
        }
    }
    Py_ssize_t count;
    ok = str_entries(other, &count) == NULL;
done:
    direct = ok;
    Py_XDECREF(d);
    Py_XDECREF(copy);
    Py_XDECREF(other);
    PyErr_Clear();
    return ok;
}
#else
static int
check_direct(void)
{
    return 0;
}
#endif

/* untracked(snapshot) -> snapshot, no longer followed by the cyclic collector. */
static PyObject *
untracked(PyObject *module, PyObject *snapshot)
{
    if (PyTuple_CheckExact(snapshot) && PyObject_GC_IsTracked(snapshot)) {
        PyObject_GC_UnTrack(snapshot);
    }
    return Py_NewRef(snapshot);
}

static PyMethodDef ckeys_functions[] = {
    {"untracked", (PyCFunction)untracked, METH_O,
     "untracked(snapshot) -> snapshot: a tuple the cyclic collector no longer follows."},
    {NULL},
};

static struct PyModuleDef ckeys_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "flageval._ckeys",
    .m_doc = "The compiled flat path of flageval._keys.",
    .m_size = -1,
    .m_methods = ckeys_functions,
};

PyMODINIT_FUNC
PyInit__ckeys(void)
{
    if (PyType_Ready(&FlatKeysType) < 0) {
        return NULL;
    }
    int direct_table = check_direct();
    PyObject *m = PyModule_Create(&ckeys_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&FlatKeysType);
    if (PyModule_AddIntConstant(m, "DIRECT_TABLE", direct_table) < 0 ||
        PyModule_AddStringConstant(m, "SOURCE_SHA256",
                                   source_marker + sizeof(SOURCE_MARKER) - 1) < 0 ||
        PyModule_AddObject(m, "FlatKeys", (PyObject *)&FlatKeysType) < 0) {
        Py_DECREF(&FlatKeysType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
