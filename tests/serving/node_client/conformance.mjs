// An independent client of the llmrec.v2 gateway: it knows only serving/proto/llmrec/v2/recommend.proto (loaded at
// run time by @grpc/proto-loader, no generated code) and checks, over real gRPC calls,
//   - that every malformed request class the proto's header lists gets its status code, with a message naming
//     the field (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED, FAILED_PRECONDITION, RESOURCE_EXHAUSTED);
//   - that Recommend, UpsertItems, DeleteItems and GetItems work end to end with the catalogue's own ids.
// Strings that protobuf.js cannot express (bytes that are not UTF-8, a payload that is not a message) are written
// as raw wire bytes through grpc-js's generic client.
//
//   node conformance.mjs CONFIG.json
//
// CONFIG: {"address", "proto", "token" (or null), "limits": {max_history, max_k, max_texts, max_items,
// max_text_bytes, max_attributes, max_filter_ids}, "known_ids": [...at least 3 catalogue ids], "replica_address"
// (a read-only gateway of the same catalogue, or null), "max_message_bytes" (or null), "deadline_ms"}.
// Prints one JSON line per check ({"case", "expected", "got", "details", "ok"}) and a summary line; exits 1 when
// a check fails.

import fs from "node:fs";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const definition = protoLoader.loadSync(config.proto, { keepCase: true, longs: String, enums: String, defaults: true });
const Recommender = grpc.loadPackageDefinition(definition).llmrec.v2.Recommender;
const SERVICE = "/llmrec.v2.Recommender/";
const L = config.limits;
const [a, b, c] = config.known_ids;
const deadlineMs = config.deadline_ms ?? 30000;

function client(address) {
  return new Recommender(address, grpc.credentials.createInsecure(),
    { "grpc.max_send_message_length": -1, "grpc.max_receive_message_length": -1 });
}

function metadata(token) {
  const m = new grpc.Metadata();
  if (token) m.set("authorization", `Bearer ${token}`);
  return m;
}

// one unary call -> {code: "OK" | status name, details, response}
function call(stub, method, request, token = config.token) {
  return new Promise((resolve) => {
    stub[method](request, metadata(token), { deadline: Date.now() + deadlineMs }, (error, response) => {
      if (error) resolve({ code: grpc.status[error.code], details: error.details ?? "", response: null });
      else resolve({ code: "OK", details: "", response });
    });
  });
}

// a unary call whose request is given as raw protobuf wire bytes
function rawCall(address, method, bytes) {
  const generic = new grpc.Client(address, grpc.credentials.createInsecure());
  const { responseDeserialize } = definition[`llmrec.v2.Recommender`][method];
  return new Promise((resolve) => {
    generic.makeUnaryRequest(SERVICE + method, (buffer) => buffer, responseDeserialize, bytes, metadata(config.token),
      { deadline: Date.now() + deadlineMs }, (error, response) => {
        generic.close();
        if (error) resolve({ code: grpc.status[error.code], details: error.details ?? "", response: null });
        else resolve({ code: "OK", details: "", response });
      });
  });
}

// protobuf wire format: a length-delimited field and a varint field
function bytesField(number, payload) {
  return Buffer.concat([Buffer.from([(number << 3) | 2]), varint(payload.length), payload]);
}
function varint(value) {
  const out = [];
  while (value > 0x7f) { out.push((value & 0x7f) | 0x80); value >>>= 7; }
  out.push(value);
  return Buffer.from(out);
}
const NOT_UTF8 = Buffer.from([0x66, 0xff, 0xfe, 0x67]); // "f", two bytes that start no UTF-8 sequence, "g"

const results = [];
function check(name, got, expected, fragment = null) {
  const named = fragment === null || got.details.includes(fragment);
  const ok = got.code === expected && named;
  results.push({ case: name, expected, got: got.code, details: got.details, ok,
    ...(named ? {} : { missing_fragment: fragment }) });
}
function expect(name, ok, details) {
  results.push({ case: name, expected: "OK", got: ok ? "OK" : "WRONG", details, ok });
}

const ids = (n, prefix) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const long = (n) => "x".repeat(n);
const stub = client(config.address);
const rec = (fields) => call(stub, "Recommend", { history: [a, b], k: 5, ...fields });

// ------------------------------------------------------------------ INVALID_ARGUMENT, each field and limit
check("recommend: empty history", await rec({ history: [] }), "INVALID_ARGUMENT", "history");
check("recommend: history above max_history", await rec({ history: Array(L.max_history + 1).fill(a) }),
  "INVALID_ARGUMENT", "history");
check("recommend: empty id in history", await rec({ history: [a, ""] }), "INVALID_ARGUMENT", "history[1]");
check("recommend: over-long id", await rec({ history: [long(L.max_text_bytes + 1)] }), "INVALID_ARGUMENT", "history[0]");
check("recommend: control character in id", await rec({ history: ["a\u0001b"] }), "INVALID_ARGUMENT", "history[0]");
check("recommend: non-UTF-8 id", await rawCall(config.address, "Recommend",
  Buffer.concat([bytesField(1, NOT_UTF8), Buffer.from([0x10, 5])])), "INVALID_ARGUMENT", "history");
check("recommend: k = 0", await rec({ k: 0 }), "INVALID_ARGUMENT", "k");
check("recommend: k < 0", await rec({ k: -3 }), "INVALID_ARGUMENT", "k");
check("recommend: k above max_k", await rec({ k: L.max_k + 1 }), "INVALID_ARGUMENT", "k");
check("recommend: too many filter ids", await rec({ filter: { exclude_ids: ids(L.max_filter_ids + 1, "x") } }),
  "INVALID_ARGUMENT", "filter.exclude_ids");
check("recommend: duplicate include_ids", await rec({ filter: { include_ids: [a, a] } }), "INVALID_ARGUMENT",
  "filter.include_ids[1]");
check("recommend: not a message", await rawCall(config.address, "Recommend", Buffer.from([0x0a, 0x7f, 0x01])),
  "INVALID_ARGUMENT", "llmrec.v2.RecommendRequest");

const embed = (texts) => call(stub, "EmbedItems", { texts });
check("embed: no texts", await embed([]), "INVALID_ARGUMENT", "texts");
check("embed: too many texts", await embed(Array(L.max_texts + 1).fill("a text")), "INVALID_ARGUMENT", "texts");
check("embed: empty text", await embed(["a text", "  "]), "INVALID_ARGUMENT", "texts[1]");
check("embed: over-long text", await embed([long(L.max_text_bytes + 1)]), "INVALID_ARGUMENT", "texts[0]");
check("embed: non-UTF-8 text", await rawCall(config.address, "EmbedItems",
  Buffer.concat([bytesField(1, Buffer.from("fine")), bytesField(1, NOT_UTF8)])), "INVALID_ARGUMENT", "texts[1]");

const upsert = (items) => call(stub, "UpsertItems", { items });
check("upsert: no items", await upsert([]), "INVALID_ARGUMENT", "items");
check("upsert: too many items", await upsert(ids(L.max_items + 1, "node-many-").map((id) => ({ id, title: "t" }))),
  "INVALID_ARGUMENT", "items");
check("upsert: duplicate ids", await upsert([{ id: "node-dup", title: "t" }, { id: "node-dup", title: "u" }]),
  "INVALID_ARGUMENT", "items[1].id");
check("upsert: neither title nor text", await upsert([{ id: "node-empty" }]), "INVALID_ARGUMENT", "items[0]");
check("upsert: over-long title", await upsert([{ id: "node-long", title: long(L.max_text_bytes + 1) }]),
  "INVALID_ARGUMENT", "items[0].title");
check("upsert: control character in id", await upsert([{ id: "node\u0007bell", title: "t" }]),
  "INVALID_ARGUMENT", "items[0].id");
check("upsert: too many attributes", await upsert([{ id: "node-attrs", title: "t",
  attributes: Object.fromEntries(ids(L.max_attributes + 1, "k").map((k) => [k, "v"])) }]),
  "INVALID_ARGUMENT", "items[0].attributes");

const del = (list) => call(stub, "DeleteItems", { ids: list });
const get = (list) => call(stub, "GetItems", { ids: list });
check("delete: no ids", await del([]), "INVALID_ARGUMENT", "ids");
check("delete: duplicate ids", await del(["node-x", "node-x"]), "INVALID_ARGUMENT", "ids[1]");
check("delete: too many ids", await del(ids(L.max_items + 1, "node-d")), "INVALID_ARGUMENT", "ids");
check("get: no ids", await get([]), "INVALID_ARGUMENT", "ids");
check("get: too many ids", await get(ids(L.max_items + 1, "node-g")), "INVALID_ARGUMENT", "ids");
check("get: empty id", await get([""]), "INVALID_ARGUMENT", "ids[0]");

// ------------------------------------------------------------------ NOT_FOUND
check("recommend: unknown id in history", await rec({ history: [a, "node-no-such-item"] }), "NOT_FOUND",
  "node-no-such-item");
check("recommend: unknown id in include_ids", await rec({ filter: { include_ids: ["node-no-such-item"] } }),
  "NOT_FOUND", "node-no-such-item");

// ------------------------------------------------------------------ UNAUTHENTICATED
if (config.token) {
  check("auth: no token", await call(stub, "Recommend", { history: [a], k: 3 }, null), "UNAUTHENTICATED");
  check("auth: wrong token", await call(stub, "Recommend", { history: [a], k: 3 }, "not-the-token"),
    "UNAUTHENTICATED");
}

// ------------------------------------------------------------------ RESOURCE_EXHAUSTED: a message above the limit
if (config.max_message_bytes) {
  check("size: request above max_message_bytes", await embed(["y".repeat(config.max_message_bytes + 16)]),
    "RESOURCE_EXHAUSTED");
}

// ------------------------------------------------------------------ FAILED_PRECONDITION: a write to a read replica
if (config.replica_address) {
  const replica = client(config.replica_address);
  check("replica: upsert", await call(replica, "UpsertItems", { items: [{ id: "node-r", title: "t" }] }),
    "FAILED_PRECONDITION", "read replica");
  check("replica: delete", await call(replica, "DeleteItems", { ids: [a] }), "FAILED_PRECONDITION", "read replica");
  const read = await call(replica, "GetItems", { ids: [a] });
  expect("replica: reads are served", read.code === "OK" && read.response.items[0]?.id === a, read.details);
  replica.close();
}

// ------------------------------------------------------------------ end to end with the catalogue's own ids
const known = await get([a, b, "node-missing"]);
expect("get: known ids come back with titles, unknown ones in missing_ids",
  known.code === "OK" && known.response.items.map((i) => i.id).join() === [a, b].join()
  && known.response.items.every((i) => i.title.length > 0) && known.response.missing_ids.join() === "node-missing",
  JSON.stringify(known.response ?? known.details));

const top = await rec({ history: [a, b, c], k: 5, exclude_history: true });
expect("recommend: k catalogue ids with scores, best first, history left out",
  top.code === "OK" && top.response.items.length === 5
  && top.response.items.every((i) => typeof i.id === "string" && ![a, b, c].includes(i.id))
  && top.response.items.every((i, j, all) => j === 0 || all[j - 1].score >= i.score),
  JSON.stringify(top.response ?? top.details));

const title = known.response?.items[0]?.title ?? "a new item";
const mine = await upsert([{ id: "node-item-1", title: `${title} (node)`, attributes: { source: "node" } },
  { id: "", title: "an item that gets its id assigned" }]);
const assigned = mine.response?.ids?.[1] ?? "";
expect("upsert: own id kept, empty id assigned",
  mine.code === "OK" && mine.response.ids[0] === "node-item-1" && assigned.startsWith("new-"),
  JSON.stringify(mine.response ?? mine.details));

const only = await rec({ history: [a, b], k: 1, filter: { include_ids: ["node-item-1"] } });
expect("recommend: the new item is recommendable at once",
  only.code === "OK" && only.response.items.length === 1 && only.response.items[0].id === "node-item-1",
  JSON.stringify(only.response ?? only.details));
const usedInHistory = await rec({ history: [a, "node-item-1"], k: 3 });
expect("recommend: the new item is usable in a history", usedInHistory.code === "OK"
  && usedInHistory.response.items.length === 3, usedInHistory.details);
const fetched = await get(["node-item-1"]);
expect("get: the new item's title and attributes", fetched.code === "OK"
  && fetched.response.items[0]?.title === `${title} (node)` && fetched.response.items[0]?.attributes.source === "node",
  JSON.stringify(fetched.response ?? fetched.details));

const removed = await del(["node-item-1", assigned, "node-never-was"]);
expect("delete: both deleted, the unknown id reported", removed.code === "OK"
  && Number(removed.response.deleted) === 2 && removed.response.missing_ids.join() === "node-never-was",
  JSON.stringify(removed.response ?? removed.details));
check("recommend: a deleted id is NOT_FOUND", await rec({ history: [a, "node-item-1"] }), "NOT_FOUND", "node-item-1");
const gone = await get(["node-item-1"]);
expect("get: a deleted id is missing", gone.code === "OK" && gone.response.missing_ids.join() === "node-item-1",
  JSON.stringify(gone.response ?? gone.details));

stub.close();
for (const r of results) console.log(JSON.stringify(r));
const failed = results.filter((r) => !r.ok);
console.log(JSON.stringify({ summary: { checks: results.length, failed: failed.length } }));
process.exit(failed.length ? 1 : 0);
