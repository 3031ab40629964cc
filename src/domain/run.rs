//! Run and step lifecycle states, spelled as they are stored and shown on the REST surface.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a run is in its life. A new run is `Running` from creation (queued runs count as
/// running, as in the Ironflow v1 protocol, which has no pending state); `started_at` stays
/// empty until a worker first picks it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
    Paused,
    WaitingForCapacity,
    Waiting,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Paused,
        Self::WaitingForCapacity,
        Self::Waiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Paused => "paused",
            Self::WaitingForCapacity => "waiting_for_capacity",
            Self::Waiting => "waiting",
        }
    }

    /// A terminal run never changes status again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name the server does not know.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown run status '{0}'; expected one of running, completed, failed, cancelled, paused, waiting_for_capacity, waiting"
)]
pub struct UnknownRunStatus(pub String);

impl FromStr for RunStatus {
    type Err = UnknownRunStatus;

    /// Accepts the stored spelling, any case, and the proto enum name (`RUN_STATUS_FAILED`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix("run_status_").unwrap_or(&lower);
        let bare = if bare == "canceled" {
            "cancelled"
        } else {
            bare
        };
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == bare)
            .ok_or_else(|| UnknownRunStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_in_every_spelling() {
        assert_eq!("failed".parse::<RunStatus>().ok(), Some(RunStatus::Failed));
        assert_eq!(
            "RUN_STATUS_WAITING_FOR_CAPACITY".parse::<RunStatus>().ok(),
            Some(RunStatus::WaitingForCapacity)
        );
        assert_eq!(
            "canceled".parse::<RunStatus>().ok(),
            Some(RunStatus::Cancelled)
        );
        assert!("exploded".parse::<RunStatus>().is_err());
        for st in RunStatus::ALL {
            assert_eq!(st.as_str().parse::<RunStatus>().ok(), Some(st));
        }
    }
}
