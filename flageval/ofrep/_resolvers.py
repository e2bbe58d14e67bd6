"""The OpenFeature resolve methods, sync and async, for every flag type: each hands its
flag, default, evaluation context and type rule to ``_answer`` (``_answer_async``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType

from ._resolve import BOOL, FLOAT, INT, OBJECT, STR, TypeRule

T = TypeVar("T")
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


class Resolvers:
    def _answer(
        self, flag_key: str, default: T, context: EvaluationContext | None, rule: TypeRule
    ) -> FlagResolutionDetails[T]:
        raise NotImplementedError

    async def _answer_async(
        self, flag_key: str, default: T, context: EvaluationContext | None, rule: TypeRule
    ) -> FlagResolutionDetails[T]:
        raise NotImplementedError

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._answer(flag_key, default_value, evaluation_context, BOOL)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._answer(flag_key, default_value, evaluation_context, STR)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._answer(flag_key, default_value, evaluation_context, INT)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._answer(flag_key, default_value, evaluation_context, FLOAT)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        return self._answer(flag_key, default_value, evaluation_context, OBJECT)

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return await self._answer_async(flag_key, default_value, evaluation_context, BOOL)

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return await self._answer_async(flag_key, default_value, evaluation_context, STR)

    async def resolve_integer_details_async(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return await self._answer_async(flag_key, default_value, evaluation_context, INT)

    async def resolve_float_details_async(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return await self._answer_async(flag_key, default_value, evaluation_context, FLOAT)

    async def resolve_object_details_async(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        return await self._answer_async(flag_key, default_value, evaluation_context, OBJECT)
