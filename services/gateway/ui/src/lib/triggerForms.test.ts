import { describe, expect, it } from "vitest";
import { bodyOf, connectionOf, emptyForm, fieldOf, fieldsOf, formFromTrigger, routeUrl, type TriggerForm, type WebsocketForm } from "./triggerForms";

function body(form: TriggerForm, editing = false): Record<string, unknown> {
  const built = bodyOf(form, editing);
  if ("error" in built) throw new Error(built.error.message);
  return built.body;
}

describe("trigger forms", () => {
  it("sends an HTTP route's fields, the secret only when typed", () => {
    const form = { ...emptyForm("http_triggers", "u/admin/hook"), path: "u/admin/route", route_path: "/orders/:id/" } as TriggerForm;
    expect(body(form)).toEqual({
      path: "u/admin/route",
      script_path: "u/admin/hook",
      is_flow: false,
      route_path: "/orders/:id/",
      http_method: "post",
      request_type: "sync",
      authentication_method: "none",
      workspaced_route: true,
      wrap_body: false,
      raw_string: false,
    });
    const signed = { ...form, authentication_method: "signature", signature_secret: "k" } as TriggerForm;
    expect(body(signed).signature_secret).toBe("k");
    // An update names the trigger in its URL and keeps the stored secret when none is typed.
    const edited = body({ ...signed, signature_secret: "" } as TriggerForm, true);
    expect(edited).not.toHaveProperty("path");
    expect(edited).not.toHaveProperty("signature_secret");
  });

  it("reads a listed trigger back into its form", () => {
    const http = formFromTrigger("http_triggers", {
      path: "u/a/r",
      script_path: "u/a/s",
      is_flow: true,
      route_path: "x",
      http_method: "get",
      request_type: "async",
      authentication_method: "signature",
      has_signature_secret: true,
      workspaced_route: false,
      wrap_body: true,
      raw_string: false,
    });
    expect(http).toMatchObject({ is_flow: true, request_type: "async", has_signature_secret: true, signature_secret: "", wrap_body: true });
    const kafka = formFromTrigger("kafka_triggers", {
      path: "u/a/k",
      script_path: "u/a/s",
      is_flow: false,
      kafka_resource_path: "u/a/kafka",
      topics: ["a", "b"],
      group_id: "g",
      auto_offset_reset: "earliest",
    });
    expect(body(kafka, true)).toEqual({
      script_path: "u/a/s",
      is_flow: false,
      kafka_resource_path: "u/a/kafka",
      topics: ["a", "b"],
      group_id: "g",
      auto_offset_reset: "earliest",
    });
    const socket = formFromTrigger("websocket_triggers", {
      path: "u/a/w",
      script_path: "u/a/s",
      is_flow: false,
      url: "wss://x",
      filters: [{ key: "type", value: { kind: "trade" } }],
      initial_messages: [{ raw_message: "hello" }, { runnable_result: { path: "u/a/auth", args: { n: 1 }, is_flow: false } }],
      can_return_message: true,
    });
    expect(body(socket, true)).toMatchObject({
      filters: [{ key: "type", value: { kind: "trade" } }],
      initial_messages: [{ raw_message: "hello" }, { runnable_result: { path: "u/a/auth", args: { n: 1 }, is_flow: false } }],
      can_return_message: true,
      filter_logic: "and",
    });
  });

  it("takes a filter value that is not JSON as text, and checks message arguments", () => {
    const form = emptyForm("websocket_triggers") as WebsocketForm;
    const withFilter = { ...form, filters: [{ key: "k", value: "plain words" }] };
    expect(body(withFilter).filters).toEqual([{ key: "k", value: "plain words" }]);
    const bad = { ...form, initial_messages: [{ type: "raw" as const, raw_message: "x" }, { type: "runnable" as const, path: "u/a/s", is_flow: false, args: "[1]" }] };
    const built = bodyOf(bad, false);
    expect(built).toEqual({ error: { message: "the arguments must be a JSON object", location: "initial_messages[1].runnable_result.args" } });
  });

  it("places an error next to the most precise field it names", () => {
    const kafka = { ...emptyForm("kafka_triggers"), topics: ["ok", "bad name"] } as TriggerForm;
    const fields = fieldsOf(kafka);
    expect(fieldOf("topics[1]", fields)).toBe("topics[1]");
    expect(fieldOf("topics", fields)).toBe("topics");
    expect(fieldOf("kafka_resource_path", fields)).toBe("kafka_resource_path");
    expect(fieldOf("nowhere", fields)).toBeNull();
    expect(fieldOf(undefined, fields)).toBeNull();
    const socket = { ...emptyForm("websocket_triggers"), filters: [{ key: "", value: "1" }] } as TriggerForm;
    expect(fieldOf("filters[0].key", fieldsOf(socket))).toBe("filters[0]");
    expect(fieldOf("filters[3].key", fieldsOf(socket))).toBe("filters");
  });

  it("says where a route is served and how a connection does", () => {
    expect(routeUrl("main", "/orders/:id/", true)).toBe("/api/r/main/orders/:id");
    expect(routeUrl("main", "orders", false)).toBe("/api/r/orders");
    const item = { path: "p", script_path: "s", is_flow: false, enabled: true };
    expect(connectionOf("http_triggers", item)).toBeNull();
    expect(connectionOf("kafka_triggers", { ...item, error: "no broker" })).toEqual({ state: "error", text: "no broker" });
    expect(connectionOf("websocket_triggers", { ...item, server_id: "t1" })?.state).toBe("connected");
    expect(connectionOf("kafka_triggers", item)?.state).toBe("pending");
    expect(connectionOf("kafka_triggers", { ...item, enabled: false, error: "x" })?.state).toBe("disabled");
  });
});
