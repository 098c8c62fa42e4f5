// Server-sent events read with fetch, so that the token travels in the Authorization
// header as for every other call (an EventSource cannot send headers: its token would
// sit in the URL, where proxies and access logs keep it).

import { getToken, withQuery } from "./api";

type Query = Parameters<typeof withQuery>[1];

export interface EventStream {
  close(): void;
}

/** The ``data`` of each complete event in ``buffer`` and what is left of it (an event
 * still arriving). Comments, ``event:``, ``id:`` and ``retry:`` lines are skipped;
 * several ``data:`` lines of one event are joined with newlines. */
export function takeEvents(buffer: string): { events: string[]; rest: string } {
  const events: string[] = [];
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop() ?? "";
  for (const block of blocks) {
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line === "data" || line.startsWith("data:")) {
        const value = line.slice(5);
        data.push(value.startsWith(" ") ? value.slice(1) : value);
      }
    }
    if (data.length > 0) events.push(data.join("\n"));
  }
  return { events, rest };
}

/** Open ``path`` as an event stream: ``onData`` gets each event's data; ``onBroken``
 * once if the stream fails or ends before ``close()`` (the caller decides whether to
 * open it again). */
export function openEventStream(
  path: string,
  query: Query,
  onData: (data: string) => void,
  onBroken: () => void,
): EventStream {
  const controller = new AbortController();
  let closed = false;
  const broken = () => {
    if (!closed) {
      closed = true;
      onBroken();
    }
  };
  const headers: Record<string, string> = { Accept: "text/event-stream" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  (async () => {
    const response = await fetch(withQuery(path, query), { headers, signal: controller.signal });
    if (!response.ok || !response.body) {
      if (response.status === 401) window.dispatchEvent(new Event("gristmill:unauthorized"));
      throw new Error(`${response.status} ${response.statusText}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const taken = takeEvents(buffer);
      buffer = taken.rest;
      for (const data of taken.events) {
        if (closed) return;
        onData(data);
      }
    }
  })().then(broken, broken);
  return {
    close() {
      closed = true;
      controller.abort();
    },
  };
}
