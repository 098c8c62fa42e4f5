import { describe, expect, it } from "vitest";
import { takeEvents } from "./eventStream";

describe("takeEvents", () => {
  it("splits complete events and keeps the one still arriving", () => {
    const { events, rest } = takeEvents('data: {"a":1}\n\ndata: {"b":2}\n\ndata: {"c"');
    expect(events).toEqual(['{"a":1}', '{"b":2}']);
    expect(rest).toBe('data: {"c"');
  });

  it("joins data lines, skips comments and other fields, accepts CRLF", () => {
    const { events, rest } = takeEvents(": ping\r\nid: 7\r\nevent: update\r\ndata: one\r\ndata:two\r\n\r\n");
    expect(events).toEqual(["one\ntwo"]);
    expect(rest).toBe("");
  });

  it("ignores events without data", () => {
    expect(takeEvents(": keep-alive\n\nretry: 1000\n\n").events).toEqual([]);
  });
});
