//! The one conformance suite every [`BindingsBackend`] runs (spec/CLUSTER.md §2, version 3):
//! the gateway's sled `Bindings` in tally-server's tests, the PostgreSQL tables in
//! tally-store-pg's. Written once against the trait, so the two cannot drift apart.
//!
//! It covers every method: reads of absent values, writes read back, the first-writer-wins
//! refusals (another session key, another close agreement) leaving the stored value in
//! place, repeats accepted, replacements where the rules replace (credit marks, restore
//! statements at one key), and promise marks cleared by name only. It panics on the first
//! difference (test code, compiled only for tests or with the `conformance` feature). Its
//! channels start with `0x00 0x00` (shard 0 of any shard count, CLUSTER.md §3), so a
//! PostgreSQL backend needs only the lease of shard 0. Fencing and races are backend
//! matters, tested by the PostgreSQL store's own tests.

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

use tally_core::{ChannelId, Hash, RequestSalt, SecretKey, Signature};

use crate::bindings::{BindingsBackend, BindingsErrorKind, CloseMark, CreditMark, SIG_LEN};

/// A channel id in shard 0 for the suite's `n`th case.
pub fn channel(n: u8) -> ChannelId {
    let mut id = [n; 32];
    id[0] = 0;
    id[1] = 0;
    ChannelId(id)
}

/// A close agreement distinct per `n`.
pub fn close(n: u8) -> CloseMark {
    CloseMark {
        size: u64::from(n) + 1,
        root: Hash([n; 32]),
        cumulative: u128::MAX - u128::from(n),
        signer_sig: [n; SIG_LEN],
        payee_sig: [n ^ 0xff; SIG_LEN],
    }
}

/// Runs the whole suite on a backend that holds none of the suite's channels yet.
pub async fn run_all<B: BindingsBackend>(db: &B) {
    terms(db).await;
    sessions(db, &channel(0xd0)).await;
    salts(db, &channel(0xd1)).await;
    closes(db, &channel(0xd2), &channel(0xd3)).await;
    credits(db, &channel(0xd4)).await;
    promises(db, &channel(0xd5), &channel(0xd6)).await;
    restores(db, &channel(0xd7), &channel(0xd8)).await;
}

/// Unwraps a backend result, naming the call that failed.
fn ok<T, E: Debug>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

/// Asserts that `result` failed with `kind`.
fn refused<B: BindingsBackend, T: Debug>(
    result: Result<T, B::Error>,
    kind: BindingsErrorKind,
    what: &str,
) {
    match result {
        Ok(v) => panic!("{what}: accepted ({v:?}), expected {kind:?}"),
        Err(e) => assert_eq!(B::kind(&e), kind, "{what}: {e}"),
    }
}

/// Terms are kept by hash; a second document under a kept hash is ignored.
pub async fn terms<B: BindingsBackend>(db: &B) {
    let (h1, h2) = (Hash([0xc1; 32]), Hash([0xc2; 32]));
    assert_eq!(ok(db.terms(&h1).await, "terms"), None);
    ok(db.remember_terms(&h1, b"first").await, "remember");
    ok(db.remember_terms(&h1, b"ignored").await, "remember again");
    assert_eq!(
        ok(db.terms(&h1).await, "terms").as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(ok(db.terms(&h2).await, "other terms"), None);
}

/// A binding is first-writer-wins: the same key again is fine, another is refused and the
/// first stays.
pub async fn sessions<B: BindingsBackend>(db: &B, ch: &ChannelId) {
    let (a, b) = (
        SecretKey::from_seed(&[1; 32]).public(),
        SecretKey::from_seed(&[2; 32]).public(),
    );
    assert_eq!(ok(db.session(ch).await, "session"), None);
    ok(db.bind(ch, &a).await, "bind");
    assert_eq!(ok(db.session(ch).await, "session"), Some(a));
    ok(db.bind(ch, &a).await, "bind the same key again");
    refused::<B, _>(
        db.bind(ch, &b).await,
        BindingsErrorKind::SessionConflict,
        "bind another key",
    );
    assert_eq!(ok(db.session(ch).await, "session"), Some(a));
    assert_eq!(ok(db.session(&channel(0xdf)).await, "unbound"), None);
}

/// The first salt stored is every caller's salt.
pub async fn salts<B: BindingsBackend>(db: &B, ch: &ChannelId) {
    let (s1, s2) = (RequestSalt([1; 32]), RequestSalt([2; 32]));
    assert_eq!(ok(db.salt(ch).await, "salt"), None);
    assert_eq!(ok(db.salt_or_insert(ch, s1).await, "first salt"), s1);
    assert_eq!(ok(db.salt_or_insert(ch, s2).await, "second salt"), s1);
    assert_eq!(ok(db.salt(ch).await, "salt"), Some(s1));
}

/// Unix seconds now, by this process's clock.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A close is stored once: a repeat keeps the first agreement time, another agreement is
/// refused; `closings` lists every close with its time.
pub async fn closes<B: BindingsBackend>(db: &B, ch: &ChannelId, other: &ChannelId) {
    assert_eq!(ok(db.closing(ch).await, "closing"), None);
    ok(db.mark_closing(ch, &close(1)).await, "mark closing");
    assert_eq!(ok(db.closing(ch).await, "closing"), Some(close(1)));
    let listed = ok(db.closings().await, "closings");
    let mine: Vec<_> = listed.iter().filter(|(c, _, _)| c == ch).collect();
    assert_eq!(mine.len(), 1, "{listed:?}");
    assert_eq!(mine[0].1, close(1));
    let at = mine[0].2.expect("a new close has its agreement time");
    assert!(at <= now() + 1 && at + 60 > now(), "{at} vs {}", now());

    // Blocking on purpose: the suite needs no runtime feature; nothing is in flight.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok(db.mark_closing(ch, &close(1)).await, "repeat the close");
    refused::<B, _>(
        db.mark_closing(ch, &close(2)).await,
        BindingsErrorKind::ClosingConflict,
        "another close",
    );
    assert_eq!(ok(db.closing(ch).await, "closing"), Some(close(1)));
    ok(
        db.mark_closing(other, &close(3)).await,
        "close another channel",
    );
    let listed = ok(db.closings().await, "closings");
    let find = |c: &ChannelId| listed.iter().find(|(id, _, _)| id == c).copied();
    assert_eq!(find(ch), Some((*ch, close(1), Some(at))), "time kept");
    assert_eq!(find(other).map(|(_, m, _)| m), Some(close(3)));
    let ids: Vec<_> = listed.iter().map(|(id, _, _)| id.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ordered by channel");
}

/// Credit marks are per disputed record; a new mark of the same record replaces the old one.
pub async fn credits<B: BindingsBackend>(db: &B, ch: &ChannelId) {
    let mark = |index, h| CreditMark {
        index,
        request_hash: Hash([h; 32]),
    };
    assert_eq!(ok(db.credit_for(ch, 7).await, "credit"), None);
    ok(db.mark_credited(ch, 7, &mark(41, 9)).await, "mark");
    ok(db.mark_credited(ch, 8, &mark(42, 8)).await, "mark another");
    assert_eq!(ok(db.credit_for(ch, 7).await, "credit"), Some(mark(41, 9)));
    assert_eq!(ok(db.credit_for(ch, 8).await, "credit"), Some(mark(42, 8)));
    assert_eq!(ok(db.credit_for(ch, 9).await, "credit"), None);
    ok(db.mark_credited(ch, 7, &mark(50, 7)).await, "replace");
    assert_eq!(ok(db.credit_for(ch, 7).await, "credit"), Some(mark(50, 7)));
    assert_eq!(
        ok(db.credit_for(&channel(0xdf), 7).await, "other channel"),
        None
    );
}

/// Promise marks: set (twice is fine), read, and cleared only for the channels named.
pub async fn promises<B: BindingsBackend>(db: &B, a: &ChannelId, b: &ChannelId) {
    assert!(!ok(db.is_promising(a).await, "is promising"));
    ok(db.mark_promising(a).await, "mark");
    ok(db.mark_promising(a).await, "mark again");
    ok(db.mark_promising(b).await, "mark b");
    assert!(ok(db.is_promising(a).await, "is promising"));
    ok(db.clear_promising(&[*a, channel(0xdf)]).await, "clear");
    assert!(!ok(db.is_promising(a).await, "cleared"));
    assert!(ok(db.is_promising(b).await, "only the named are cleared"));
    ok(db.clear_promising(&[]).await, "clear nothing");
    assert!(ok(db.is_promising(b).await, "still marked"));
}

/// Restore statements: every (nonce, size) kept, ordered by it, a repeat replacing.
pub async fn restores<B: BindingsBackend>(db: &B, a: &ChannelId, b: &ChannelId) {
    let sig = |n| Signature([n; 64]);
    assert!(ok(db.restores(a).await, "restores").is_empty());
    let (n1, n2) = (Hash([1; 32]), Hash([2; 32]));
    ok(db.keep_restore(a, &n2, 5, b"two", &sig(2)).await, "keep");
    ok(db.keep_restore(a, &n1, 9, b"one-9", &sig(1)).await, "keep");
    ok(db.keep_restore(a, &n1, 5, b"old", &sig(0)).await, "keep");
    ok(
        db.keep_restore(a, &n1, 5, b"one-5", &sig(1)).await,
        "replace",
    );
    assert_eq!(
        ok(db.restores(a).await, "restores"),
        vec![
            (b"one-5".to_vec(), sig(1)),
            (b"one-9".to_vec(), sig(1)),
            (b"two".to_vec(), sig(2)),
        ]
    );
    ok(
        db.keep_restore(a, &n1, 256, b"one-256", &sig(3)).await,
        "keep",
    );
    let sizes: Vec<_> = ok(db.restores(a).await, "restores")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        sizes[..3],
        [b"one-5".to_vec(), b"one-9".to_vec(), b"one-256".to_vec()]
    );
    assert!(ok(db.restores(b).await, "other channel").is_empty());
}
