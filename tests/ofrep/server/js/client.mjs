// The reference OFREP web provider (@openfeature/ofrep-web-provider) under node, driven
// by tests/ofrep/server/test_web_provider.py: it prints one JSON line per snapshot of
// what the client serves, and reads commands (a new context, quit) from stdin.
import readline from 'node:readline';
import { EventSource } from 'eventsource';
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

// node 20 has no EventSource of its own; the provider looks for the global one.
globalThis.EventSource = EventSource;

const [baseUrl, apiKey] = process.argv.slice(2);
const say = (line) => process.stdout.write(JSON.stringify(line) + '\n');
const client = OpenFeature.getClient();
const snapshot = (what) => {
  const beta = client.getBooleanDetails('beta', false);
  say({ what, color: client.getStringValue('color', 'none'), beta: beta.value, reason: beta.reason });
};

const provider = new OFREPWebProvider({
  baseUrl,
  cacheMode: 'disabled',
  headers: apiKey ? [['X-API-Key', apiKey]] : undefined,
});
OpenFeature.addHandler(ProviderEvents.ConfigurationChanged, () => snapshot('changed'));
await OpenFeature.setContext({ targetingKey: 'user-1', email: 'ada@macrosoft.com' });
await OpenFeature.setProviderAndWait(provider);
snapshot('ready');

for await (const line of readline.createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.context) {
    await OpenFeature.setContext(command.context);
    snapshot('context');
  }
  if (command.quit) break;
}
await OpenFeature.close();
process.exit(0);
