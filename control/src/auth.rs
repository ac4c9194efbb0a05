//! Admin tokens: generation, hashing and constant-time checking.
//!
//! Owns: the token format (`pc_` + 64 hex digits from the OS RNG), the stored form (SHA-256
//! hex of the token; the token itself is never stored), and [`TokenSet`], the node's cached
//! set of valid hashes. Does not own: where hashes are stored (the [`Store`]) or HTTP.

use parking_lot::Mutex;
use picloud_core::{Store, StoreError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

/// The valid token hashes, cached from the store.
pub struct TokenSet {
    hashes: Mutex<Vec<[u8; 32]>>,
}

impl TokenSet {
    /// Loads the hashes from the store.
    pub fn load(store: &dyn Store) -> Result<TokenSet, StoreError> {
        let set = TokenSet {
            hashes: Mutex::new(Vec::new()),
        };
        set.reload(store)?;
        Ok(set)
    }

    fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let decoded = store
            .admin_token_hashes()?
            .iter()
            .filter_map(|h| hex::decode(h).ok()?.try_into().ok())
            .collect();
        *self.hashes.lock() = decoded;
        Ok(())
    }

    fn matches(&self, digest: &[u8]) -> bool {
        // Compare against every hash without stopping early, so timing does not tell which
        // (or whether any) hash shares a prefix with the candidate.
        let mut ok = subtle::Choice::from(0u8);
        for h in self.hashes.lock().iter() {
            ok |= h.as_slice().ct_eq(digest);
        }
        ok.into()
    }

    /// Checks a presented token. On a miss the set is reloaded once from the store, so a token
    /// added by another node (cluster) is accepted without a restart.
    pub fn check(&self, store: &dyn Store, token: &str) -> bool {
        let digest = Sha256::digest(token.as_bytes());
        if self.matches(&digest) {
            return true;
        }
        if self.reload(store).is_err() {
            return false;
        }
        self.matches(&digest)
    }
}

/// Makes sure the store holds at least one token. Adds the hash of `configured` if given;
/// otherwise, if no token exists yet, generates one and returns it so the caller can print it
/// once.
pub fn ensure_admin_token(
    store: &dyn Store,
    configured: Option<&str>,
) -> Result<Option<String>, anyhow::Error> {
    if let Some(token) = configured {
        let hash = hash_token(token);
        if !store.admin_token_hashes()?.contains(&hash) {
            store.add_admin_token_hash(&hash)?;
        }
        return Ok(None);
    }
    if !store.admin_token_hashes()?.is_empty() {
        return Ok(None);
    }
    let token = generate_token().map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    store.add_admin_token_hash(&hash_token(&token))?;
    Ok(Some(token))
}
