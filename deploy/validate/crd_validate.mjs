// Validate prometheus-operator objects (ServiceMonitor, PrometheusRule) against their CRD schemas
// (ajv validators compiled from the CRD openAPIV3Schema, shipped by
// @kubernetes-models/prometheus-operator).
// usage (cwd = the tools dir holding node_modules): node crd_validate.mjs docs.json
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

// The package only exports ESM subpaths; load the model files from the tools dir directly.
async function model(kind) {
  const modPath = path.join(process.cwd(), "node_modules", "@kubernetes-models", "prometheus-operator",
    "monitoring.coreos.com", "v1", `${kind}.js`);
  return (await import(pathToFileURL(modPath).href))[kind];
}

const docs = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const doc of docs) {
  const name = `${doc?.kind ?? "?"}/${doc?.metadata?.name ?? "?"}`;
  try {
    const Model = await model(doc.kind);
    new Model(doc).validate();
  } catch (e) {
    failed++;
    console.log(`${name}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
