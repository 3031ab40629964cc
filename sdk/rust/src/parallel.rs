//! `Ctx::parallel` and `Ctx::parallel_settled`: branches run concurrently, each with its own
//! step-id scope (`<scope>:<name>:<i>`), and a branch that has to wait parks until the other
//! started branches are done, so their work is committed before the job is handed back.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::Notify;

use crate::ctx::Ctx;
use crate::ctx::Wait;
use crate::error::FnError;

/// A `parallel` step: its name (the branches' step-id scope) and how many branches run at
/// once. `"name".into()` gives one with no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parallel {
    pub name: String,
    /// `None`: every branch starts at once.
    pub concurrency: Option<usize>,
}

impl Parallel {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            concurrency: None,
        }
    }

    /// Runs at most `branches` branches at once (0 means no limit).
    #[must_use]
    pub fn concurrency(mut self, branches: usize) -> Self {
        self.concurrency = (branches > 0).then_some(branches);
        self
    }
}

impl From<&str> for Parallel {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for Parallel {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// The branches of one `parallel` step that parked on a wait, by branch index.
#[derive(Debug, Default)]
pub(crate) struct Group {
    parked: Mutex<BTreeMap<usize, Wait>>,
    changed: Notify,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<usize, Wait>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by a branch's waiting step; the branch's future is never polled to the end.
    pub(crate) fn park(&self, index: usize, step: Wait) {
        self.lock().insert(index, step);
        // `notify_one` keeps a permit when the driver is not waiting yet, so no park is missed.
        self.changed.notify_one();
    }

    fn parked(&self) -> usize {
        self.lock().len()
    }

    /// The wait of the lowest-numbered parked branch: the one the job is handed back with.
    fn first(&self) -> Option<Wait> {
        self.lock().values().next().cloned()
    }
}

/// How a branch error affects the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnError {
    /// No more branches start; the started ones finish; the first error is returned.
    FailFast,
    /// Every branch runs; each result is returned.
    Collect,
}

impl Ctx {
    /// Runs `branches` concurrently and returns their outputs in order.
    ///
    /// Each branch gets its own `Ctx` whose step ids are scoped to the branch
    /// (`<run id>:<name>:<i>:<step>:<n>`), so branches may use the same step names and a replay
    /// finds each branch's steps whatever order they ran in. A parallel name may be used once
    /// per scope.
    ///
    /// When a branch fails, no more branches start, the started ones finish, and the error of
    /// the lowest-numbered failed branch is returned (the branches that completed are
    /// memoized, so a retry only runs the others). When a branch has to wait (`sleep`,
    /// `wait_for_event`, `invoke`), the other started branches finish first, then the job is
    /// handed back; on resume, finished branches replay from their memos.
    pub fn parallel<T, B, Fut, P, I>(
        &self,
        parallel: P,
        branches: I,
    ) -> impl Future<Output = Result<Vec<T>, FnError>> + Send + use<T, B, Fut, P, I>
    where
        P: Into<Parallel>,
        I: IntoIterator<Item = B>,
        T: Send,
        B: FnOnce(Ctx) -> Fut + Send,
        Fut: Future<Output = Result<T, FnError>> + Send,
    {
        let started = self.start_parallel(parallel.into(), branches.into_iter().collect());
        async move {
            let results = started?.settle(OnError::FailFast).await?;
            results.into_iter().collect()
        }
    }

    /// Like [`Ctx::parallel`], but every branch runs whatever the others do, and each branch's
    /// result is returned. The outer `Err` only carries a refused hand-back.
    pub fn parallel_settled<T, B, Fut, P, I>(
        &self,
        parallel: P,
        branches: I,
    ) -> impl Future<Output = Result<Vec<Result<T, FnError>>, FnError>> + Send + use<T, B, Fut, P, I>
    where
        P: Into<Parallel>,
        I: IntoIterator<Item = B>,
        T: Send,
        B: FnOnce(Ctx) -> Fut + Send,
        Fut: Future<Output = Result<T, FnError>> + Send,
    {
        let started = self.start_parallel(parallel.into(), branches.into_iter().collect());
        async move { started?.settle(OnError::Collect).await }
    }

    /// Takes the step's prefix when the method is called, like every other step's id.
    fn start_parallel<B>(&self, parallel: Parallel, branches: Vec<B>) -> Result<Run<B>, FnError> {
        let prefix = self.parallel_prefix(&parallel.name)?;
        let limit = parallel
            .concurrency
            .unwrap_or(branches.len())
            .clamp(1, branches.len().max(1));
        Ok(Run {
            ctx: self.clone(),
            prefix,
            limit,
            branches,
        })
    }
}

/// One `parallel` call, ready to run.
struct Run<B> {
    ctx: Ctx,
    prefix: String,
    limit: usize,
    branches: Vec<B>,
}

impl<B> Run<B> {
    async fn settle<T, Fut>(self, on_error: OnError) -> Result<Vec<Result<T, FnError>>, FnError>
    where
        B: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = Result<T, FnError>>,
    {
        let Self {
            ctx,
            prefix,
            limit,
            branches,
        } = self;
        let group = std::sync::Arc::new(Group::default());
        let mut results: Vec<Option<Result<T, FnError>>> = std::iter::repeat_with(|| None)
            .take(branches.len())
            .collect();
        let mut queued = branches.into_iter().enumerate();
        let mut running = FuturesUnordered::new();
        let mut stop = false;
        loop {
            // A parked branch's future stays in `running` (it never resolves), so the branches
            // still working are the others.
            let parked = group.parked();
            stop |= parked > 0;
            while !stop && running.len() - parked < limit {
                let Some((i, branch)) = queued.next() else {
                    break;
                };
                let scoped = ctx.branch(format!("{prefix}:{i}"), i, group.clone());
                running.push(async move { (i, branch(scoped).await) });
            }
            if running.len() == group.parked() {
                break;
            }
            tokio::select! {
                Some((i, result)) = running.next() => {
                    stop |= result.is_err() && on_error == OnError::FailFast;
                    results[i] = Some(result);
                }
                () = group.changed.notified() => {}
            }
        }
        drop(running);
        if let Some(wait) = group.first() {
            return Err(ctx.suspend(wait).await);
        }
        if on_error == OnError::FailFast
            && let Some(error) = results.iter_mut().find_map(|r| match r {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            })
        {
            return Err(error);
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(FnError::non_retryable("the branch was not started").code("NOT_STARTED"))
                })
            })
            .collect())
    }
}
