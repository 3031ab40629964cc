//! The bench's functions and what their handlers observe, whichever process runs them: in the
//! worker's own process the observations travel to the bench as JSON lines on stdout.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ironflow_sdk::{Ctx, FnError, Function};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One thing a handler saw. Instants are wall-clock (microseconds since the epoch): the bench
/// and its worker are two processes on one machine, and only the wall clock is shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// A step of the throughput function returned: how long it took, its commit included.
    StepCommitted { micros: u64 },
    /// A run of the throughput function finished its last step.
    Finished { run_id: String },
    /// A latency probe's first step started.
    FirstStarted { probe: u64, at_unix_micros: u64 },
}

/// Where observations go.
pub type Observe = Arc<dyn Fn(Observation) + Send + Sync>;

pub fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The functions of one bench run, named under its prefix (so repeated runs on one database
/// never collide).
#[derive(Debug, Clone)]
pub struct Workload {
    pub prefix: String,
    pub steps: usize,
}

impl Workload {
    pub fn steps_event(&self) -> String {
        format!("{}.steps", self.prefix)
    }

    pub fn first_event(&self) -> String {
        format!("{}.first", self.prefix)
    }

    pub fn sync_event(&self) -> String {
        format!("{}.sync", self.prefix)
    }

    /// The function whose queued runs make the backlog: registered, never served.
    pub fn backlog_function_id(&self) -> String {
        format!("{}-backlog", self.prefix)
    }

    /// The served functions: `steps` steps that do nothing but be durable, one step that
    /// notes when it started, one step answered synchronously.
    pub fn served(&self, observe: &Observe) -> Vec<Function> {
        vec![
            self.steps_function(observe.clone()),
            self.first_step_function(observe.clone()),
            self.sync_function(),
        ]
    }

    pub fn backlog_function(&self) -> Function {
        Function::new(self.backlog_function_id())
            .trigger(format!("{}.backlog", self.prefix))
            .handler(|_ctx: Ctx, input: Value| async move { Ok::<_, FnError>(input) })
    }

    fn steps_function(&self, observe: Observe) -> Function {
        let steps = self.steps;
        Function::new(format!("{}-steps", self.prefix))
            .trigger(self.steps_event())
            .handler(move |ctx: Ctx, _input: Value| {
                let observe = observe.clone();
                async move {
                    for i in 0..steps {
                        let t = Instant::now();
                        ctx.run(&format!("s{i}"), || async move { Ok(i) }).await?;
                        let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        observe(Observation::StepCommitted { micros });
                    }
                    observe(Observation::Finished {
                        run_id: ctx.run_id().to_owned(),
                    });
                    Ok::<_, FnError>(steps)
                }
            })
    }

    fn first_step_function(&self, observe: Observe) -> Function {
        Function::new(format!("{}-first", self.prefix))
            .trigger(self.first_event())
            .handler(move |ctx: Ctx, input: Value| {
                let observe = observe.clone();
                async move {
                    let probe = input["i"].as_u64().unwrap_or(u64::MAX);
                    ctx.run("first", || async move {
                        observe(Observation::FirstStarted {
                            probe,
                            at_unix_micros: unix_micros(SystemTime::now()),
                        });
                        Ok(probe)
                    })
                    .await
                }
            })
    }

    fn sync_function(&self) -> Function {
        Function::new(format!("{}-sync", self.prefix))
            .trigger(self.sync_event())
            .handler(|ctx: Ctx, input: Value| async move {
                ctx.run("echo", || async move { Ok(input) }).await
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_travel_as_one_json_line_each() {
        let seen = [
            Observation::StepCommitted { micros: 812 },
            Observation::Finished {
                run_id: "run_1".into(),
            },
            Observation::FirstStarted {
                probe: 7,
                at_unix_micros: 1_764_633_600_000_000,
            },
        ];
        for o in seen {
            let line = serde_json::to_string(&o).expect("an observation serializes");
            assert!(!line.contains('\n'));
            assert_eq!(
                serde_json::from_str::<Observation>(&line).expect("its line parses"),
                o
            );
        }
    }
}
