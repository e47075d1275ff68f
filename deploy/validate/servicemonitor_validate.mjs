// Validate ServiceMonitor objects against the prometheus-operator CRD schema (ajv validators
// compiled from the CRD openAPIV3Schema, shipped by @kubernetes-models/prometheus-operator).
// usage (cwd = the tools dir holding node_modules): node servicemonitor_validate.mjs docs.json
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

// The package only exports ESM subpaths; load the model file from the tools dir directly.
const modPath = path.join(process.cwd(), "node_modules", "@kubernetes-models", "prometheus-operator",
  "monitoring.coreos.com", "v1", "ServiceMonitor.js");
const { ServiceMonitor } = await import(pathToFileURL(modPath).href);

const docs = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const doc of docs) {
  const name = doc?.metadata?.name ?? "?";
  try {
    new ServiceMonitor(doc).validate();
  } catch (e) {
    failed++;
    console.log(`ServiceMonitor/${name}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
