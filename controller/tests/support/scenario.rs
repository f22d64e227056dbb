//! Scenarios shared by every market the controller runs on: one body,
//! judged by that market's own books (the sim's ledger, the fake Console's
//! `/_ledger`), never by the controller's view of itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use leasegate_controller::ControllerHandle;
use leasegate_controller::reconcile::Failpoint;
use leasegate_fleet::Snapshot;
use tokio::sync::watch;

use super::wait_until;

/// One deployment as a market's books record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub closed: bool,
    /// A lease was ever created on it.
    pub leased: bool,
    /// Open, with an active lease: paid for now.
    pub active: bool,
}

/// The verdicts a scenario asks of a market's ledger.
pub trait Books: std::fmt::Debug {
    fn entries(&self) -> Vec<(String, Entry)>;
    /// The most leases any one intent ever got; more than 1 is a double.
    fn max_leases_per_intent(&self) -> usize;

    fn entry(&self, dseq: &str) -> Option<Entry> {
        self.entries()
            .into_iter()
            .find_map(|(d, e)| (d == dseq).then_some(e))
    }
    fn active(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter_map(|(d, e)| e.active.then_some(d))
            .collect()
    }
    /// Open deployments without an active lease.
    fn orphans(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter_map(|(d, e)| (!e.closed && !e.active).then_some(d))
            .collect()
    }
}

impl Books for leasegate_controller::market::sim::Ledger {
    fn entries(&self) -> Vec<(String, Entry)> {
        self.deployments
            .iter()
            .map(|d| {
                let e = Entry {
                    closed: d.closed_at.is_some(),
                    leased: d.lease.is_some(),
                    active: d.is_active() && d.has_active_lease(),
                };
                (d.dseq.clone(), e)
            })
            .collect()
    }
    fn max_leases_per_intent(&self) -> usize {
        leasegate_controller::market::sim::Ledger::max_leases_per_intent(self)
    }
}

impl Books for leasegate_fake_console::Ledger {
    fn entries(&self) -> Vec<(String, Entry)> {
        self.deployments
            .iter()
            .map(|d| {
                let e = Entry {
                    closed: !d.is_open(),
                    leased: !d.leases.is_empty(),
                    active: d.has_active_lease(),
                };
                (d.dseq.clone(), e)
            })
            .collect()
    }
    fn max_leases_per_intent(&self) -> usize {
        // The group name is the intent's tag.
        self.max_leases_per_tag()
    }
}

pub type Started = (ControllerHandle, watch::Receiver<Arc<Snapshot>>);

/// A controller on some market, restartable on the same state file.
pub struct Harness<B> {
    /// Starts a controller on the shared state file, "crashing" at the point.
    pub start: Box<dyn Fn(Option<Failpoint>) -> Started>,
    pub books: Box<dyn Fn() -> B>,
    /// How long the market waits between the crash and the restart.
    pub downtime: Duration,
    /// How long the books get to settle before the verdict.
    pub settle: Duration,
    pub patience: Duration,
}

/// The books are in shape: `n` active leases, no orphan, no double lease,
/// and every lease we pay for is one the gateway can use.
pub fn assert_books(books: &dyn Books, snap: &Snapshot, n: usize, what: &str) {
    assert_eq!(books.active().len(), n, "{what}: {books:#?}");
    assert!(books.orphans().is_empty(), "{what} orphans: {books:#?}");
    assert_eq!(books.max_leases_per_intent(), 1, "{what}: {books:#?}");
    let published: HashSet<String> = snap.ready().map(|e| e.id.clone()).collect();
    for d in books.active() {
        assert!(
            published.contains(&format!("lease-{d}")),
            "{what}: unpublished {d}"
        );
    }
}

/// The controller dies at `point` of an acquisition and restarts on the
/// same state file: the books end with `wanted` active leases, no orphan
/// and no intent with two leases, and what the crash left was finished (or,
/// where the create's answer and with it the manifest was lost, closed
/// unleased). Returns the restarted controller for further checks.
pub async fn crash_at<B: Books>(h: &Harness<B>, point: Failpoint, wanted: usize) -> Started {
    {
        let (c, _rx) = (h.start)(Some(point));
        assert!(
            wait_until(h.patience, || c.crashed()).await,
            "failpoint {point:?} never reached: {:#?}",
            (h.books)()
        );
        // Dropping the handle aborts everything, as a crash would.
        drop(c);
    }
    let at_crash = (h.books)();
    // The market lives on while the controller is down.
    tokio::time::sleep(h.downtime).await;
    let (c, rx) = (h.start)(None);
    let ok = wait_until(h.patience * 2, || {
        rx.borrow().ready().count() == wanted && (h.books)().orphans().is_empty()
    })
    .await;
    assert!(ok, "{point:?}: {:?}\n{:#?}", c.status(), (h.books)());
    // Let any cleanup still due happen, then judge by the market's books.
    tokio::time::sleep(h.settle).await;
    let books = (h.books)();
    assert_books(&books, &rx.borrow(), wanted, &format!("{point:?}"));
    for (dseq, then) in at_crash.entries() {
        let now = books.entry(&dseq).unwrap();
        match point {
            Failpoint::AfterCreate if !then.leased => {
                assert!(now.closed && !now.leased, "{point:?} {dseq}: {books:#?}")
            }
            _ if then.active => assert!(now.active, "{point:?}: lease {dseq} dropped"),
            _ => {}
        }
    }
    if matches!(point, Failpoint::AfterLease | Failpoint::BeforePublish) {
        assert!(
            !at_crash.active().is_empty(),
            "{point:?}: crash before any lease"
        );
    }
    (c, rx)
}
