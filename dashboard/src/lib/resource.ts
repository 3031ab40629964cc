//! Loading state for one request: data, error, and a reload that pages call on live news.
//! Reloads coalesce: at most one request is in flight, news during it schedules one more
//! (after a short pause), and every answer for the current inputs is applied — so a busy
//! system's stream of transitions neither floods the server nor starves the page.

import { useEffect, useLayoutEffect, useState } from "react";

export interface Resource<T> {
  data: T | undefined;
  error: Error | undefined;
  loading: boolean;
  reload: () => void;
}

/** The pause before a reload asked for while one was in flight. */
export const RELOAD_PAUSE_MS = 300;

/** One request at a time, the latest inputs' answers only. */
export class Coalescer<T> {
  private inFlight = false;
  private again = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private generation = 0;
  private load: () => Promise<T> = () => Promise.reject(new Error("nothing to load yet"));
  private readonly onData: (d: T) => void;
  private readonly onError: (e: Error) => void;

  constructor(onData: (d: T) => void, onError: (e: Error) => void) {
    this.onData = onData;
    this.onError = onError;
  }

  /** The request to make (the caller's latest closure). */
  setLoad(load: () => Promise<T>): void {
    this.load = load;
  }

  /** New inputs: forget what is pending and ask now. */
  restart(): void {
    this.generation += 1;
    this.again = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.start();
  }

  /** News: ask again, once, when the request in flight is done. */
  request(): void {
    if (this.inFlight) {
      this.again = true;
      return;
    }
    if (this.timer === undefined) this.start();
  }

  dispose(): void {
    this.generation += 1;
    clearTimeout(this.timer);
  }

  private start(): void {
    const mine = this.generation;
    this.inFlight = true;
    this.load()
      .then(
        (d) => { if (mine === this.generation) this.onData(d); },
        (e: unknown) => { if (mine === this.generation) this.onError(e instanceof Error ? e : new Error(String(e))); },
      )
      .finally(() => {
        if (mine !== this.generation) return;
        this.inFlight = false;
        if (this.again) {
          this.again = false;
          this.timer = setTimeout(() => {
            this.timer = undefined;
            this.start();
          }, RELOAD_PAUSE_MS);
        }
      });
  }
}

export function useResource<T>(load: () => Promise<T>, deps: readonly unknown[]): Resource<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<Error | undefined>(undefined);
  const [queue] = useState(
    () =>
      new Coalescer<T>(
        (d) => {
          setData(d);
          setError(undefined);
        },
        setError,
      ),
  );
  // Before the effects below run: a restart or a reload always uses this render's closure.
  useLayoutEffect(() => {
    queue.setLoad(load);
  });

  useEffect(() => {
    queue.restart();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);

  useEffect(() => () => queue.dispose(), [queue]);

  return { data, error, loading: data === undefined && error === undefined, reload: () => queue.request() };
}
