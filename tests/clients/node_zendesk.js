// Drives node-zendesk (a real third-party Zendesk client) against zenrelay's Apps API
// proxy, configured by base URL only (`endpointUri`) and the client key as its API token.
// Run by tests/it/proxy.rs; prints one JSON report line at the end.
"use strict";

const zendesk = require("node-zendesk");

async function main() {
  const client = zendesk.createClient({
    username: process.env.ZENDESK_USERNAME,
    token: process.env.ZENDESK_TOKEN,
    endpointUri: process.env.ZENDESK_ENDPOINT,
  });
  const appId = Number(process.env.APP_ID);
  const report = {};

  const before = await client.installations.list();
  report.listed_before = before.length;

  const created = await client.installations.create({
    app_id: appId,
    settings: { name: "Node", api_token: "node-secret" },
  });
  const installation = created.result;
  report.created_id = installation.id;

  const shown = await client.installations.show(installation.id);
  report.shown_app_id = shown.result.app_id;

  const updated = await client.installations.update(installation.id, {
    settings: { name: "Node - Updated" },
  });
  report.updated_name = updated.result.settings.name;

  const listed = await client.installations.list();
  report.listed_ids = listed.map((i) => i.id);

  // Notify through the generic request helper of the same client.
  await client.installations.post(["apps", "notify"], {
    app_id: appId,
    event: "from-node",
    body: JSON.stringify({ from: "node-zendesk" }),
  });
  report.notified = true;

  try {
    await client.installations.delete(installation.id);
    report.deleted = true;
  } catch (e) {
    report.deleted = false;
    report.delete_error = String(e && e.message);
  }
  console.log(JSON.stringify(report));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
