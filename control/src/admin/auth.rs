//! Admin tokens: generation, hashing, and recognising a presented token.
//!
//! Owns: the token format (`pc_` + 64 hex digits from the OS RNG), the stored form (SHA-256
//! hex of the token; the token itself is never stored), the bootstrap token
//! ([`ensure_bootstrap_token`]), and [`TokenCache`]: the node's copy of every token record,
//! refreshed when the live catalog revision moves (token writes are catalog changes, so a
//! token created or revoked through any node of a cluster is seen here once this node's sync
//! thread has published that revision). Does not own: which right a call needs (`routes.rs`),
//! the rule deciding it (`picloud_core::access`), or storage (the [`AccessStore`]).

use parking_lot::Mutex;
use picloud_core::StoreError;
use picloud_core::access::{AccessStore, AppScope, BOOTSTRAP_TOKEN, Role, TokenRecord};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Last-used times are written at most this often per token: a write per admin call would
/// double the store traffic of reads for a precision nobody needs.
pub const LAST_USED_PRECISION_MS: u64 = 60_000;

/// A fresh random admin token.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("pc_{}", hex::encode(bytes)))
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// One cached token: its record and its hash as bytes (for the constant-time compare).
struct Cached {
    record: TokenRecord,
    digest: [u8; 32],
}

struct Cache {
    /// The catalog revision the records were loaded at (`None`: never loaded).
    revision: Option<u64>,
    tokens: Vec<Cached>,
}

/// The node's token records, cached by revision.
pub struct TokenCache {
    cache: Mutex<Cache>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new()
    }
}

impl TokenCache {
    /// An empty cache; the first [`TokenCache::authenticate`] loads it.
    pub fn new() -> TokenCache {
        TokenCache {
            cache: Mutex::new(Cache {
                revision: None,
                tokens: Vec::new(),
            }),
        }
    }

    /// The record of the token presented as `token`, or `None` if no stored token matches.
    /// `live_revision` is the node's live catalog revision: if it moved since the cache was
    /// loaded, the cache is reloaded first (the revision is read before the load, so the load
    /// is at least as new). Records its use (at most once per [`LAST_USED_PRECISION_MS`]).
    pub fn authenticate(
        &self,
        store: &dyn AccessStore,
        live_revision: u64,
        token: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let digest = Sha256::digest(token.as_bytes());
        let mut cache = self.cache.lock();
        if cache.revision != Some(live_revision) {
            cache.tokens = load(store)?;
            cache.revision = Some(live_revision);
        }
        // Compare against every hash without stopping early, so timing does not tell which
        // (or whether any) hash shares a prefix with the candidate.
        let mut found = None;
        for (i, t) in cache.tokens.iter().enumerate() {
            if bool::from(t.digest.as_slice().ct_eq(digest.as_slice())) {
                found = Some(i);
            }
        }
        let Some(i) = found else {
            return Ok(None);
        };
        let now = picloud_core::now_ms();
        let cached = &mut cache.tokens[i];
        let stale = cached
            .record
            .last_used_at_ms
            .is_none_or(|t| now.saturating_sub(t) >= LAST_USED_PRECISION_MS);
        if stale {
            cached.record.last_used_at_ms = Some(now);
            // A failed last-used write must not refuse a valid token.
            if let Err(e) = store.token_used(&cached.record.name, now) {
                log::warn!("recording the use of token {:?}: {e}", cached.record.name);
            }
        }
        Ok(Some(cached.record.clone()))
    }
}

fn load(store: &dyn AccessStore) -> Result<Vec<Cached>, StoreError> {
    Ok(store
        .tokens()?
        .into_iter()
        .filter_map(|record| {
            let digest: [u8; 32] = hex::decode(&record.hash).ok()?.try_into().ok()?;
            Some(Cached { record, digest })
        })
        .collect())
}

/// Makes sure an admin token exists. With `configured` (`PICLOUD_ADMIN_TOKEN`), the token named
/// `bootstrap` is set to it (admin, every app), replacing an older bootstrap token. Without it,
/// if no token exists at all, a bootstrap token is generated and returned so the caller can
/// print it once.
pub fn ensure_bootstrap_token(
    store: &dyn AccessStore,
    configured: Option<&str>,
) -> Result<Option<String>, anyhow::Error> {
    let record = |hash: String| TokenRecord {
        name: BOOTSTRAP_TOKEN.into(),
        role: Role::Admin,
        apps: AppScope::All,
        hash,
        created_at_ms: picloud_core::now_ms(),
        last_used_at_ms: None,
    };
    if let Some(token) = configured {
        store.replace_token(&record(hash_token(token)))?;
        return Ok(None);
    }
    if !store.tokens()?.is_empty() {
        return Ok(None);
    }
    let token = generate_token().map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    store.replace_token(&record(hash_token(&token)))?;
    Ok(Some(token))
}
