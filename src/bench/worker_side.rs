//! Where the bench's SDK worker runs: by default in its own process, as a deployment would
//! (`ironflow bench-worker`, this same binary, reporting observations as JSON lines on
//! stdout and stopping when its stdin closes), or as a task in the bench's own process for
//! comparison (`--in-process-worker`).

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use ironflow_sdk::Worker;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::workload::{Observation, Observe, Workload};

/// What the worker serves and where.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub server_url: String,
    pub workload: Workload,
    pub concurrency: usize,
}

fn build(options: &WorkerOptions, observe: &Observe) -> anyhow::Result<Worker> {
    let mut builder = Worker::builder(&options.server_url, "")
        .concurrency(u32::try_from(options.concurrency).unwrap_or(u32::MAX));
    for f in options.workload.served(observe) {
        builder = builder.function(f);
    }
    Ok(builder.build()?)
}

/// A running worker, either kind.
pub enum RunningWorker {
    Task {
        stop: CancellationToken,
        task: JoinHandle<Result<(), ironflow_sdk::SdkError>>,
    },
    Process {
        child: tokio::process::Child,
        /// Turns the child's stdout lines into observations; ends at its EOF.
        reader: JoinHandle<anyhow::Result<()>>,
    },
}

impl RunningWorker {
    pub async fn start(
        options: &WorkerOptions,
        in_process: bool,
        observe: Observe,
    ) -> anyhow::Result<Self> {
        if in_process {
            let worker = build(options, &observe)?;
            let stop = CancellationToken::new();
            let task = {
                let stop = stop.clone();
                tokio::spawn(async move { worker.run(stop).await })
            };
            return Ok(Self::Task { stop, task });
        }
        let exe = std::env::current_exe().context("finding this binary to run the worker")?;
        let mut child = tokio::process::Command::new(exe)
            .arg("bench-worker")
            .arg("--url")
            .arg(&options.server_url)
            .arg("--prefix")
            .arg(&options.workload.prefix)
            .arg("--steps")
            .arg(options.workload.steps.to_string())
            .arg("--concurrency")
            .arg(options.concurrency.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the worker process")?;
        let stdout = child.stdout.take().context("the worker's stdout")?;
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await? {
                let observation: Observation = serde_json::from_str(&line)
                    .with_context(|| format!("the worker wrote {line:?}"))?;
                observe(observation);
            }
            Ok(())
        });
        Ok(Self::Process { child, reader })
    }

    /// The worker process's id, when it has its own.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Task { .. } => None,
            Self::Process { child, .. } => child.id(),
        }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Task { stop, task } => {
                stop.cancel();
                task.await.context("the worker task panicked")??;
            }
            Self::Process { mut child, reader } => {
                drop(child.stdin.take());
                let status = match tokio::time::timeout(Duration::from_secs(30), child.wait()).await
                {
                    Ok(status) => status?,
                    Err(_) => {
                        child.kill().await?;
                        anyhow::bail!("the worker process did not stop within 30 s");
                    }
                };
                reader.await.context("the worker reader panicked")??;
                anyhow::ensure!(status.success(), "the worker process ended with {status}");
            }
        }
        Ok(())
    }
}

/// `ironflow bench-worker`: the worker process's side. Serves until stdin closes, writing each
/// observation as one JSON line (through one writer task, so handlers never block on the pipe).
pub async fn serve(options: WorkerOptions) -> anyhow::Result<()> {
    let (lines, mut queued) = tokio::sync::mpsc::unbounded_channel::<Observation>();
    let observe: Observe = std::sync::Arc::new(move |o| {
        let _ = lines.send(o);
    });
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
        while let Some(first) = queued.recv().await {
            let mut next = Some(first);
            while let Some(o) = next {
                out.write_all(serde_json::to_string(&o)?.as_bytes()).await?;
                out.write_all(b"\n").await?;
                next = queued.try_recv().ok();
            }
            out.flush().await?;
        }
        Ok::<(), anyhow::Error>(())
    });
    let worker = build(&options, &observe)?;
    drop(observe);
    let stop = CancellationToken::new();
    let stdin_closed = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
            stop.cancel();
        })
    };
    let served = worker.run(stop).await;
    stdin_closed.abort();
    drop(worker);
    writer.await.context("the observation writer panicked")??;
    Ok(served?)
}
