// The flow_status of a flow's child flow jobs (loop iterations, branches), live over
// the same server-sent events as the flow itself: a child that ended answers once and
// its stream closes; a running one sends each change until it ends.

import { useEffect, useRef, useState } from "react";
import { ws } from "./api";
import { type EventStream, openEventStream } from "./eventStream";
import type { ChildRef } from "./flowGraph";
import type { FlowStatus, Job } from "./types";

/**
 * At most this many children are followed at once: with the flow's own stream they
 * stay under the browser's six connections per server (HTTP/1.1), so the page's
 * other requests never wait behind them. The others follow as streams end.
 */
export const MAX_CHILD_STREAMS = 3;

interface UpdateEvent {
  type: "update";
  completed: boolean;
  flow_status?: FlowStatus | null;
  job?: Job;
}

type StreamEvent = UpdateEvent | { type: "ping" | "timeout" | "not_found" } | { type: "error"; error: string };

/** The statuses of ``children`` (by job id) as they arrive; ended ones are kept. */
export function useChildFlowStatuses(children: ChildRef[]): ReadonlyMap<string, FlowStatus> {
  const [statuses, setStatuses] = useState<ReadonlyMap<string, FlowStatus>>(() => new Map());
  /** Children whose last status is known (they ended, or no longer exist). */
  const settled = useRef(new Set<string>());
  const open = useRef(new Map<string, EventStream>());
  /** Bumped when a stream closes, so that waiting children get its place. */
  const [freed, setFreed] = useState(0);
  const wanted = [...new Set(children.map((c) => c.job))];
  const key = wanted.join(",");

  useEffect(() => {
    const want = new Set(wanted);
    for (const [job, source] of open.current) {
      if (!want.has(job)) {
        source.close();
        open.current.delete(job);
      }
    }
    const close = (job: string, source: EventStream, retryAfterMs?: number) => {
      source.close();
      if (open.current.get(job) === source) open.current.delete(job);
      if (retryAfterMs === undefined) setFreed((n) => n + 1);
      else setTimeout(() => setFreed((n) => n + 1), retryAfterMs);
    };
    for (const job of wanted) {
      if (open.current.size >= MAX_CHILD_STREAMS) break;
      if (settled.current.has(job) || open.current.has(job)) continue;
      const onData = (data: string) => {
        const event = JSON.parse(data) as StreamEvent;
        if (event.type === "update") {
          const status = event.flow_status ?? event.job?.flow_status;
          if (status) setStatuses((previous) => new Map(previous).set(job, status));
          if (event.completed) {
            settled.current.add(job);
            close(job, source);
          }
        } else if (event.type === "not_found") {
          settled.current.add(job);
          close(job, source);
        } else if (event.type === "timeout") {
          close(job, source); // the stream's lifetime ended: open it again
        } else if (event.type === "error") {
          close(job, source, 1000);
        }
      };
      const source: EventStream = openEventStream(
        ws(`/jobs_u/getupdate_sse/${job}`),
        { no_logs: true, poll_delay_ms: 250 },
        onData,
        () => close(job, source, 1000),
      );
      open.current.set(job, source);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, freed]);

  useEffect(() => {
    const streams = open.current;
    return () => {
      for (const source of streams.values()) source.close();
      streams.clear();
    };
  }, []);
  return statuses;
}
