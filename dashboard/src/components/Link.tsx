//! An in-app link: a real `<a href>` (open in a new tab works) that navigates without a reload.

import type { MouseEvent, ReactNode } from "react";
import { navigate } from "../lib/router";

export function Link({ to, children, className }: { to: string; children: ReactNode; className?: string }) {
  const onClick = (e: MouseEvent<HTMLAnchorElement>) => {
    if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    navigate(to);
  };
  return (
    <a href={to} onClick={onClick} className={className ?? "text-indigo-700 hover:underline"}>
      {children}
    </a>
  );
}
