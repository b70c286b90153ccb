//! Coalesces the credits of many concurrent client requests into one multi-row insert.
//!
//! Every form submit of every user posts a formId, so ingestion is the hottest path. One
//! INSERT per request is bounded by Postgres' commit rate; here requests queue while the
//! previous insert is in flight, and the next insert takes all of them at once ("smart
//! batching": no timer, so a lone request is not delayed). Each request is answered only
//! after the statement holding its rows has committed.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::credits::{self, NewCredit};
use crate::domain::formid::Credit;

/// Rows per insert at most.
pub const MAX_BATCH_ROWS: usize = 2_000;
/// Inserts in flight at once; while they run, the next batch gathers.
pub const MAX_INSERTS_IN_FLIGHT: usize = 4;

type Reply = oneshot::Sender<Result<HashSet<String>, Arc<sqlx::Error>>>;

struct Job {
    appid: String,
    rows: Vec<(i64, Credit)>,
    reply: Reply,
}

#[derive(Clone)]
pub struct CreditWriter {
    tx: mpsc::Sender<Job>,
}

impl CreditWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(8_192);
        tokio::spawn(run(pool, rx));
        Self { tx }
    }

    /// Stores one request's credits (distinct values, one user each); returns the values
    /// that were new.
    pub async fn insert(
        &self,
        appid: &str,
        rows: Vec<(i64, Credit)>,
    ) -> Result<HashSet<String>, Arc<sqlx::Error>> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            appid: appid.to_string(),
            rows,
            reply,
        };
        let closed = || Arc::new(sqlx::Error::PoolClosed);
        self.tx.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Job>) {
    let in_flight = Arc::new(Semaphore::new(MAX_INSERTS_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut rows = first.rows.len();
        let mut batch = vec![first];
        while rows < MAX_BATCH_ROWS {
            match rx.try_recv() {
                Ok(job) => {
                    rows += job.rows.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            write(&pool, batch).await;
            drop(permit);
        });
    }
}

async fn write(pool: &PgPool, batch: Vec<Job>) {
    match insert_jobs(pool, &batch).await {
        Ok(owners) => answer(batch, owners),
        // One bad request must not fail the others.
        Err(_) if batch.len() > 1 => {
            for job in batch {
                let single = vec![job];
                match insert_jobs(pool, &single).await {
                    Ok(owners) => answer(single, owners),
                    Err(e) => fail(single, e),
                }
            }
        }
        Err(e) => fail(batch, e),
    }
}

/// Inserts the batch; returns, per job index, the values it added.
async fn insert_jobs(pool: &PgPool, batch: &[Job]) -> sqlx::Result<Vec<HashSet<String>>> {
    // The same formId of one user in two requests of one batch: the first request owns
    // it, the later ones see a duplicate, as if they had come after it.
    let mut owner: HashMap<(i64, &str), usize> = HashMap::new();
    let mut rows = Vec::new();
    for (i, job) in batch.iter().enumerate() {
        for (user_id, credit) in &job.rows {
            if let Entry::Vacant(slot) = owner.entry((*user_id, credit.value.as_str())) {
                slot.insert(i);
                rows.push(NewCredit {
                    appid: &job.appid,
                    user_id: *user_id,
                    credit,
                });
            }
        }
    }
    let inserted = credits::insert(pool, &rows).await?;
    let mut per_job = vec![HashSet::new(); batch.len()];
    for (user_id, value) in inserted {
        if let Some(&i) = owner.get(&(user_id, value.as_str())) {
            per_job[i].insert(value);
        }
    }
    Ok(per_job)
}

fn answer(batch: Vec<Job>, owners: Vec<HashSet<String>>) {
    for (job, added) in batch.into_iter().zip(owners) {
        let _ = job.reply.send(Ok(added));
    }
}

fn fail(batch: Vec<Job>, e: sqlx::Error) {
    let e = Arc::new(e);
    for job in batch {
        let _ = job.reply.send(Err(e.clone()));
    }
}
