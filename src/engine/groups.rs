//! Consumer groups: durable, named subscriptions to developer topics whose members share the
//! messages. Each message is queued for every matching group when it is published (same
//! transaction), handed to one member at a time, and redelivered until it is acked, terminated
//! or out of redeliveries (at least once; `auto` groups are at most once).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::domain::expression::{Bindings, EventView, compiled};
use crate::domain::group::{
    ACK_WAIT, AckMode, GroupSettings, GroupSettingsInput, GroupStatus, Settle,
    validate_consumer_id, validate_group_name,
};
use crate::domain::pattern::EventPattern;
use crate::domain::time::Ts;
use crate::ids::EnvId;
use crate::store::groups::{ConsumerGroupRecord, GroupClaim, GroupDelivery};

use super::{BusMessage, Engine, EngineError, MessageKind};

/// Longest a member waits without looking at the database (a redelivery due on another node, a
/// lost wakeup): the slow safety sweep.
const SAFETY_SWEEP: Duration = Duration::from_secs(5);
/// How soon a member whose last claim found every due message held looks again.
const HELD_RECHECK: Duration = Duration::from_secs(1);
/// How often an idle member tells the store it is still there (members unseen for two minutes
/// are not counted).
const MEMBER_REFRESH: Duration = Duration::from_secs(30);

impl Engine {
    pub async fn create_consumer_group(
        &self,
        env: &EnvId,
        name: &str,
        input: GroupSettingsInput,
    ) -> Result<ConsumerGroupRecord, EngineError> {
        validate_group_name(name).map_err(EngineError::InvalidArgument)?;
        let settings = GroupSettings::parse(input).map_err(EngineError::InvalidArgument)?;
        self.store()
            .group_create(env, name, &settings)
            .await?
            .ok_or_else(|| {
                EngineError::AlreadyExists(format!("consumer group '{name}' already exists"))
            })
    }

    pub async fn consumer_group(
        &self,
        env: &EnvId,
        name: &str,
    ) -> Result<ConsumerGroupRecord, EngineError> {
        validate_group_name(name).map_err(EngineError::InvalidArgument)?;
        self.store()
            .group_list(env, Some(name))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::not_found("consumer group", name))
    }

    pub async fn consumer_groups(
        &self,
        env: &EnvId,
    ) -> Result<Vec<ConsumerGroupRecord>, EngineError> {
        Ok(self.store().group_list(env, None).await?)
    }

    /// Replaces a group's settings (the transport merges a field mask into the current ones).
    pub async fn update_consumer_group(
        &self,
        env: &EnvId,
        name: &str,
        input: GroupSettingsInput,
    ) -> Result<ConsumerGroupRecord, EngineError> {
        validate_group_name(name).map_err(EngineError::InvalidArgument)?;
        let settings = GroupSettings::parse(input).map_err(EngineError::InvalidArgument)?;
        if !self.store().group_update(env, name, &settings).await? {
            return Err(EngineError::not_found("consumer group", name));
        }
        // Paused → active, or a higher limit: members may have work now.
        self.bus().groups_changed();
        self.consumer_group(env, name).await
    }

    pub async fn delete_consumer_group(&self, env: &EnvId, name: &str) -> Result<(), EngineError> {
        validate_group_name(name).map_err(EngineError::InvalidArgument)?;
        if self.store().group_delete(env, name).await? {
            self.bus().groups_changed();
            Ok(())
        } else {
            Err(EngineError::not_found("consumer group", name))
        }
    }

    /// Joins a group as `consumer_id`; the member takes messages until it leaves.
    pub async fn join_consumer_group(
        &self,
        env: &EnvId,
        name: &str,
        consumer_id: &str,
    ) -> Result<GroupMember, EngineError> {
        validate_consumer_id(consumer_id).map_err(EngineError::InvalidArgument)?;
        // Subscribe before the first claim so that no wakeup in between is lost.
        let live = self.bus().subscribe_messages();
        let group = self.consumer_group(env, name).await?;
        let pattern = EventPattern::parse(&group.settings.pattern)
            .map_err(|e| EngineError::FailedPrecondition(e.to_string()))?;
        Ok(GroupMember {
            engine: self.clone(),
            group,
            pattern,
            consumer_id: consumer_id.to_owned(),
            live,
            due_now: true,
            held_all_due: false,
            last_seen: std::time::Instant::now(),
        })
    }

    /// Settles a message for a member that is not holding a [`GroupMember`] here (the unary
    /// `AckEvent`): any member's ack counts, as with redelivered messages.
    pub async fn settle_group_message(
        &self,
        env: &EnvId,
        name: &str,
        message_id: &str,
        settle: Settle,
    ) -> Result<(), EngineError> {
        let group = self.consumer_group(env, name).await?;
        let settle = with_default_delay(settle, &group.settings);
        if self
            .store()
            .group_settle(&group.id, message_id, settle)
            .await?
        {
            self.bus().groups_changed();
            Ok(())
        } else {
            Err(EngineError::not_found(
                "in-flight message",
                format!("{message_id} in consumer group {name}"),
            ))
        }
    }

    /// The ids of the groups of `env` a message on `topic` is queued for.
    pub(crate) async fn groups_for_message(
        &self,
        env: &EnvId,
        topic: &str,
        data: &serde_json::Value,
    ) -> Result<Vec<String>, EngineError> {
        let groups = self.store().group_list(env, None).await?;
        let bindings = Bindings::for_event(&EventView {
            id: "",
            name: topic,
            data,
            metadata: &serde_json::Value::Null,
            timestamp_ms: Ts::now().millis(),
        });
        Ok(groups
            .into_iter()
            .filter(|g| {
                EventPattern::parse(&g.settings.pattern).is_ok_and(|p| p.matches(topic))
                    && (g.settings.filter_expr.is_empty()
                        || compiled(&g.settings.filter_expr).is_some_and(|f| f.matches(&bindings)))
            })
            .map(|g| g.id)
            .collect())
    }
}

/// A nak without its own delay takes the group's.
fn with_default_delay(settle: Settle, settings: &GroupSettings) -> Settle {
    match settle {
        Settle::Nak { delay_ms } if delay_ms <= 0 => Settle::Nak {
            delay_ms: settings.redeliver_delay_ms,
        },
        other => other,
    }
}

/// One joined member of a consumer group. Call [`leave`](Self::leave) when it goes away so the
/// messages it holds go to the other members at once (otherwise after the ack deadline).
pub struct GroupMember {
    engine: Engine,
    group: ConsumerGroupRecord,
    pattern: EventPattern,
    consumer_id: String,
    live: broadcast::Receiver<Arc<BusMessage>>,
    /// Something may be claimable now (set by wakeups, cleared by an empty claim).
    due_now: bool,
    /// The last claim came back empty although something was due: it is held (locked or at
    /// this member's limit), so the next wait waits for a change rather than the clock.
    held_all_due: bool,
    /// When the store last saw this member (claims and refreshes).
    last_seen: std::time::Instant,
}

impl GroupMember {
    pub fn group(&self) -> &ConsumerGroupRecord {
        &self.group
    }

    pub fn consumer_id(&self) -> &str {
        &self.consumer_id
    }

    /// True when a claim may find something (then call [`claim`](Self::claim) and run it to
    /// completion; it is not cancel-safe).
    pub fn should_claim(&self) -> bool {
        self.due_now
    }

    /// Takes due messages, up to what the member may still hold (`max_inflight` less the
    /// unsettled messages it holds, however they are settled: here, by `AckEvent`, on any node).
    pub async fn claim(&mut self) -> Result<Vec<GroupDelivery>, EngineError> {
        // The group may have been paused, resumed or retuned since the member joined.
        self.group = self
            .engine
            .consumer_group(&self.group.env_id, &self.group.name)
            .await?;
        if self.group.settings.status == GroupStatus::Paused {
            self.due_now = false;
            return Ok(Vec::new());
        }
        let auto_ack = self.group.settings.ack_mode == AckMode::Auto;
        let claimed = self
            .engine
            .store()
            .group_claim(&GroupClaim {
                group_id: self.group.id.clone(),
                consumer_id: self.consumer_id.clone(),
                max_held: i64::from(self.group.settings.max_inflight),
                ack_deadline: Ts::now().plus(ACK_WAIT),
                max_deliveries: self.group.settings.max_deliveries(),
                auto_ack,
            })
            .await?;
        self.last_seen = std::time::Instant::now();
        if claimed.is_empty() {
            self.due_now = false;
            self.held_all_due = true;
        }
        Ok(claimed)
    }

    /// Waits until something may be claimable: a message published on a matching topic (here or
    /// on another node), a settle or leave in any group here, or the next redelivery coming due.
    /// A slow sweep re-reads the queue's next due time (changes made on another node) and keeps
    /// the member counted; it claims only when something is due. Cancel-safe.
    pub async fn wait(&mut self) {
        if self.should_claim() {
            return;
        }
        loop {
            let next_due = match self.engine.store().group_next_due(&self.group.id).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a consumer group's next due delivery");
                    None
                }
            };
            let now = Ts::now();
            if next_due.is_some_and(|due| due <= now) && !self.held_all_due {
                break;
            }
            // Everything due is held by someone (perhaps by this member, up to max_inflight):
            // wait for a settle, a new message or the next deadline, not for the clock.
            let sleep_for = match next_due {
                None => SAFETY_SWEEP,
                // Held (a change here wakes us); look again soon for one made elsewhere.
                Some(due) if due <= now => HELD_RECHECK,
                Some(due) => {
                    let ms = u64::try_from(due.millis() - now.millis()).unwrap_or(0);
                    Duration::from_millis(ms.max(1)).min(SAFETY_SWEEP)
                }
            };
            let groups = self.engine.bus().group_changes();
            let changed = groups.notified();
            tokio::pin!(changed);
            let deadline = tokio::time::sleep(sleep_for);
            tokio::pin!(deadline);
            let woken = loop {
                tokio::select! {
                    received = self.live.recv() => match received {
                        Ok(m) if m.kind == MessageKind::Topic
                            && m.env_id == self.group.env_id
                            && self.pattern.matches(&m.subject) => break true,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break true,
                        Err(broadcast::error::RecvError::Closed) => {
                            (&mut deadline).await;
                            break false;
                        }
                    },
                    () = &mut changed => break true,
                    () = &mut deadline => break false,
                }
            };
            self.held_all_due = false;
            if woken {
                break;
            }
            if self.last_seen.elapsed() >= MEMBER_REFRESH {
                self.last_seen = std::time::Instant::now();
                if let Err(e) = self
                    .engine
                    .store()
                    .group_member_seen(&self.group.id, &self.consumer_id)
                    .await
                {
                    tracing::warn!(error = %e, "refreshing a consumer group member");
                }
            }
        }
        self.due_now = true;
    }

    /// Settles a message this member was handed. Unknown ids (never handed here, or already
    /// settled) are an error; the message may still be settled by another member.
    pub async fn settle(&mut self, message_id: &str, settle: Settle) -> Result<(), EngineError> {
        let settle = with_default_delay(settle, &self.group.settings);
        let settled = self
            .engine
            .store()
            .group_settle(&self.group.id, message_id, settle)
            .await?;
        self.due_now = true;
        if settled {
            if !matches!(settle, Settle::Ack) {
                self.engine.bus().groups_changed();
            }
            Ok(())
        } else {
            Err(EngineError::not_found(
                "in-flight message",
                format!("{message_id} in consumer group {}", self.group.name),
            ))
        }
    }

    /// Leaves the group: held messages are due again for the other members at once.
    pub async fn leave(self) {
        if let Err(e) = self
            .engine
            .store()
            .group_leave(&self.group.id, &self.consumer_id)
            .await
        {
            tracing::warn!(error = %e, group = %self.group.name, "releasing a leaving member's messages");
        }
        self.engine.bus().groups_changed();
    }
}
