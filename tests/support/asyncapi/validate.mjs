// Parses an AsyncAPI document with the official parser and prints its diagnostics as JSON:
// {"errors": [...], "warnings": [...], "infos": n, "servers": {...}}. Exit 0 once it has parsed.
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
const text = await readFile(path, "utf8");
const { document, diagnostics } = await new Parser().parse(text, { source: path });
const pick = (severity) =>
  diagnostics
    .filter((d) => d.severity === severity)
    .map((d) => ({ code: d.code, message: d.message, path: d.path.join(".") }));
const servers = {};
if (document) {
  for (const server of document.servers().all()) {
    servers[server.id()] = { host: server.host(), protocol: server.protocol() };
  }
}
process.stdout.write(
  JSON.stringify({
    parsed: Boolean(document),
    errors: pick(DiagnosticSeverity.Error),
    warnings: pick(DiagnosticSeverity.Warning),
    infos: pick(DiagnosticSeverity.Information).length + pick(DiagnosticSeverity.Hint).length,
    channels: document ? document.channels().length : 0,
    operations: document ? document.operations().length : 0,
    servers,
  }) + "\n",
);
