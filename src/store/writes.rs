//! Writes every area shares: a change's history entry (in the change's transaction) and the
//! one NOTIFY a committing transaction sends to other nodes.

use super::StoreError;
use super::sql::{Conn, args, sql};
use crate::domain::history::NewHistoryEntry;
use crate::domain::time::Ts;

/// Appends one history entry inside the caller's transaction.
pub(crate) async fn append_history<C: Conn + ?Sized>(
    conn: &mut C,
    entry: &NewHistoryEntry,
    at: Ts,
) -> Result<(), StoreError> {
    conn.execute(
        sql!("append_history"),
        args![
            at,
            entry.env_id.as_str(),
            entry.kind.as_str(),
            entry.run_id.as_ref().map(|r| r.as_str()),
            entry.function_id.as_ref().map(|f| f.as_str()),
            entry.event_id.as_ref().map(|e| e.as_str()),
            &entry.payload,
        ],
    )
    .await?;
    Ok(())
}

/// Tells other nodes what this transaction changed: one NOTIFY per transaction, sent at
/// commit (a no-op on SQLite, where every writer is in this process).
pub(crate) async fn notify_commit<C: Conn + ?Sized>(
    conn: &mut C,
    node: &str,
    effects: &crate::domain::lifecycle::Effects,
) -> Result<(), StoreError> {
    if let Some(payload) = super::notify_payload(node, effects) {
        conn.execute(sql!("notify_commit"), args![payload.as_str()])
            .await?;
    }
    Ok(())
}

/// `LIKE` treats `%` and `_` as wildcards; a search for them should find them literally.
pub(crate) fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
