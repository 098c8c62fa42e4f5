// Follow a job live over the gateway's server-sent events: new log chunks, running
// state, a flow's step statuses, and at the end the completed job.

import { useEffect, useState } from "react";
import { ws } from "./api";
import { type EventStream, openEventStream } from "./eventStream";
import type { FlowStatus, Job } from "./types";

export interface JobStream {
  logs: string;
  running: boolean;
  completed: boolean;
  flowStatus: FlowStatus | null;
  /** The completed job (its logs are in ``logs``). */
  job: Job | null;
  /** The stream broke and could not come back (e.g. the job was deleted). */
  error: string | null;
}

interface UpdateEvent {
  type: "update";
  running: boolean;
  completed: boolean;
  log_offset: number;
  new_logs?: string;
  flow_status?: FlowStatus | null;
  job?: Job;
}

type StreamEvent = UpdateEvent | { type: "ping" | "timeout" | "not_found" } | { type: "error"; error: string };

const INITIAL: JobStream = { logs: "", running: false, completed: false, flowStatus: null, job: null, error: null };

/** ``jobId`` null: follow nothing. */
export function useJobStream(jobId: string | null): JobStream {
  const [state, setState] = useState<JobStream>(INITIAL);
  useEffect(() => {
    setState(INITIAL);
    if (!jobId) return;
    let offset = 0;
    let source: EventStream | null = null;
    let closed = false;
    let retry: ReturnType<typeof setTimeout> | undefined;

    const reopen = (afterMs: number) => {
      source?.close();
      if (!closed) retry = setTimeout(open, afterMs);
    };
    const onData = (data: string) => {
      const event = JSON.parse(data) as StreamEvent;
      if (event.type === "update") {
        const chunk = event.new_logs ?? "";
        offset = event.log_offset;
        setState((previous) => ({
          logs: previous.logs + chunk,
          running: event.running,
          completed: event.completed,
          flowStatus: event.flow_status ?? event.job?.flow_status ?? previous.flowStatus,
          job: event.job ?? previous.job,
          error: null,
        }));
        if (event.completed) stop();
      } else if (event.type === "timeout") {
        reopen(0);
      } else if (event.type === "not_found") {
        setState((previous) => ({ ...previous, error: "the job no longer exists" }));
        stop();
      } else if (event.type === "error") {
        reopen(1000);
      }
    };
    const open = () => {
      // Broken (network, server restart): open again from the last offset.
      source = openEventStream(
        ws(`/jobs_u/getupdate_sse/${jobId}`),
        { log_offset: offset, poll_delay_ms: 250 },
        onData,
        () => reopen(1000),
      );
    };
    const stop = () => {
      closed = true;
      source?.close();
      if (retry) clearTimeout(retry);
    };
    open();
    return stop;
  }, [jobId]);
  return state;
}
