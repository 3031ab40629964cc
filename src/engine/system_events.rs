//! System events: every history entry becomes a live message on the bus
//! (`system.run.<id>.<kind>`, `system.config.<name>.<kind>`, `system.secret.<name>.<action>`)
//! for `/ws` subscribers. The history table is the durable copy; this tailer reads it after
//! each local commit (and on the safety sweep for other nodes' commits), only while someone
//! is subscribed.

use std::time::Duration;

use super::Engine;
use super::bus::{BusMessage, MessageKind};
use crate::store::history::HistoryRecord;

const SWEEP: Duration = Duration::from_secs(1);

/// The subject a history entry is published under, if any.
pub fn system_subject(entry: &HistoryRecord) -> Option<String> {
    let kind = entry.kind.as_str();
    if let Some(run) = &entry.run_id {
        return Some(format!("system.run.{run}.{kind}"));
    }
    let name = entry.payload.get("name").and_then(|v| v.as_str());
    match (kind, name) {
        ("config.updated" | "config.deleted", Some(n)) => Some(format!(
            "system.config.{n}.{}",
            kind.trim_start_matches("config.")
        )),
        ("secret.changed", Some(n)) => {
            let action = entry
                .payload
                .get("action")
                .and_then(|v| v.as_str())
                .unwrap_or("changed");
            Some(format!("system.secret.{n}.{action}"))
        }
        ("function.registered", _) => entry
            .function_id
            .as_ref()
            .map(|f| format!("system.function.{f}.registered")),
        (k, _) if k.starts_with("circuit_breaker.") => entry
            .function_id
            .as_ref()
            .map(|f| format!("system.function.{f}.{k}")),
        _ => None,
    }
}

impl Engine {
    pub(crate) async fn run_history_tailer(&self) {
        let schedule = self.bus().history_changes();
        // `None` while nobody subscribes: no reads on the hot path; the first subscriber starts
        // from the history's end.
        let mut position: Option<i64> = None;
        loop {
            let changed = schedule.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let floor = self.bus().take_history_floor();
            if !self.bus().has_subscribers() {
                position = None;
            } else if position.is_none() {
                position = match floor {
                    Some(seq) => Some(seq),
                    None => self.store().max_history_seq().await.ok(),
                };
            }
            if let Some(mut cursor) = position.filter(|_| self.bus().has_subscribers()) {
                match self.store().history_after(cursor, 1000).await {
                    Ok(entries) => {
                        for entry in entries {
                            cursor = cursor.max(entry.seq);
                            if let Some(subject) = system_subject(&entry) {
                                self.bus().publish_message(BusMessage {
                                    env_id: entry.env_id.clone(),
                                    kind: MessageKind::System,
                                    subject,
                                    id: format!("h{}", entry.seq),
                                    sequence: entry.seq,
                                    data: serde_json::json!({
                                        "kind": entry.kind,
                                        "run_id": entry.run_id,
                                        "function_id": entry.function_id,
                                        "event_id": entry.event_id,
                                        "payload": entry.payload,
                                    }),
                                    timestamp: entry.recorded_at,
                                });
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "system events: reading the history failed")
                    }
                }
                position = Some(cursor);
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep(SWEEP) => {}
                () = self.shutdown_token().cancelled() => return,
            }
        }
    }
}
