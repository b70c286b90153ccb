//! The per-app send pace (`send_rate_per_sec`), shared by campaign deliveries and triggered
//! messages, triggered messages first.
//!
//! A campaign batch keeps up to `FORMPUSH_SEND_CONCURRENCY` sends waiting for the limiter,
//! so a message that simply queued behind them could wait for the whole batch. Instead,
//! while a triggered message waits for a slot, campaign sends do not take one: the
//! message gets the next slot, about `1 / send_rate_per_sec` away.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

pub struct SendGate {
    limiter: DefaultDirectRateLimiter,
    urgent_waiting: AtomicUsize,
    urgent_gone: Notify,
}

/// Who is asking for a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A triggered message.
    Urgent,
    /// A campaign delivery.
    Routine,
}

impl SendGate {
    pub fn new(per_sec: i32) -> Self {
        let rate = NonZeroU32::new(per_sec.max(1) as u32).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            urgent_waiting: AtomicUsize::new(0),
            urgent_gone: Notify::new(),
        }
    }

    /// Waits for the app's next send slot.
    pub async fn ready(&self, priority: Priority) {
        match priority {
            Priority::Urgent => {
                let _waiting = UrgentWaiting::new(self);
                self.limiter.until_ready().await;
            }
            Priority::Routine => loop {
                self.no_urgent_waiting().await;
                match self.limiter.check() {
                    Ok(()) => return,
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(self.limiter.clock().now());
                        tokio::time::sleep(wait).await;
                    }
                }
            },
        }
    }

    async fn no_urgent_waiting(&self) {
        loop {
            // Registered before the check, so a wake-up between the two is not lost.
            let gone = self.urgent_gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.urgent_waiting.load(Ordering::SeqCst) == 0 {
                return;
            }
            gone.await;
        }
    }
}

/// Counts an urgent send as waiting until it has its slot, or is dropped (shutdown).
struct UrgentWaiting<'a>(&'a SendGate);

impl<'a> UrgentWaiting<'a> {
    fn new(gate: &'a SendGate) -> Self {
        gate.urgent_waiting.fetch_add(1, Ordering::SeqCst);
        Self(gate)
    }
}

impl Drop for UrgentWaiting<'_> {
    fn drop(&mut self) {
        if self.0.urgent_waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.urgent_gone.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn routine_sends_wait_while_an_urgent_one_waits_even_with_slots_free() {
        let gate = SendGate::new(1000);
        let urgent = UrgentWaiting::new(&gate);
        let held = tokio::time::timeout(Duration::from_millis(100), gate.ready(Priority::Routine));
        assert!(
            held.await.is_err(),
            "a routine send overtook a waiting urgent one"
        );
        let routine = gate.ready(Priority::Routine);
        let release = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(urgent);
        };
        let ((), ()) = tokio::time::timeout(
            Duration::from_millis(500),
            futures::future::join(routine, release),
        )
        .await
        .expect("routine sends go once no urgent one waits");
    }

    #[tokio::test]
    async fn an_urgent_send_waits_only_for_the_next_slot() {
        // 10 a second, burst 10: after the burst the next slot is 100 ms away.
        let gate = SendGate::new(10);
        for _ in 0..10 {
            gate.ready(Priority::Routine).await;
        }
        let started = std::time::Instant::now();
        gate.ready(Priority::Urgent).await;
        assert!(started.elapsed() < Duration::from_millis(250));
    }
}
