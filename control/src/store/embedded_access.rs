//! Tokens and the audit log in the embedded store: [`AccessStore`] for [`EmbeddedStore`], in
//! the `tokens` and `audit` tables of the same redb file (layout in `embedded.rs`).
//!
//! Owns: how token records and audit entries are written and read there, numbering audit
//! entries and trimming them to the bound. Does not own: the rules of who may do what
//! (`picloud_core::access`), hashing tokens (control's admin auth) or the revision (token
//! writes go through [`EmbeddedStore::write`], which bumps it like any catalog change; audit
//! appends and last-used times do not).
//!
//! Audit ids grow from the last id in the table, which trimming never removes (at least one
//! entry is always kept), so an id is never given out twice.

use picloud_core::access::{AccessStore, AuditEntry, TokenRecord};
use picloud_core::store::{StoreError, StoreResult};
use redb::{ReadableTable, ReadableTableMetadata};

use super::EmbeddedStore;
use super::embedded::{AUDIT, Outcome, TOKENS, db_err};
use super::kv_common::corrupt;

fn decode_token(json: &str) -> StoreResult<TokenRecord> {
    serde_json::from_str(json).map_err(|e| corrupt("token", e))
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| corrupt(what, e))
}

fn decode_audit(id: u64, json: &str) -> StoreResult<AuditEntry> {
    let mut entry: AuditEntry = serde_json::from_str(json).map_err(|e| corrupt("audit", e))?;
    entry.id = id;
    Ok(entry)
}

impl AccessStore for EmbeddedStore {
    fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.read(|t| {
            let mut out = Vec::new();
            for entry in t.tokens.iter().map_err(db_err)? {
                out.push(decode_token(entry.map_err(db_err)?.1.value())?);
            }
            Ok(out)
        })
    }

    fn create_token(&self, token: &TokenRecord) -> StoreResult<u64> {
        let json = encode("token", token)?;
        let ((), revision) = self.write(|t| {
            if t.tokens.get(token.name.as_str()).map_err(db_err)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a token named {:?} exists",
                    token.name
                )));
            }
            t.tokens
                .insert(token.name.as_str(), json.as_str())
                .map_err(db_err)?;
            Ok(Outcome::Changed(()))
        })?;
        Ok(revision)
    }

    fn replace_token(&self, token: &TokenRecord) -> StoreResult<bool> {
        let json = encode("token", token)?;
        let (changed, _) = self.write(|t| {
            let same = t
                .tokens
                .get(token.name.as_str())
                .map_err(db_err)?
                .map(|g| decode_token(g.value()))
                .transpose()?
                .is_some_and(|old| {
                    old.hash == token.hash && old.role == token.role && old.apps == token.apps
                });
            if same {
                return Ok(Outcome::Unchanged(false));
            }
            t.tokens
                .insert(token.name.as_str(), json.as_str())
                .map_err(db_err)?;
            Ok(Outcome::Changed(true))
        })?;
        Ok(changed)
    }

    fn delete_token(&self, name: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|t| {
            Ok(match t.tokens.remove(name).map_err(db_err)? {
                Some(_) => Outcome::Changed(true),
                None => Outcome::Unchanged(false),
            })
        })?;
        Ok(deleted)
    }

    fn token_used(&self, name: &str, at_ms: u64) -> StoreResult<()> {
        // Not a catalog change: its own transaction, no revision bump.
        let txn = self.database().begin_write().map_err(db_err)?;
        {
            let mut tokens = txn.open_table(TOKENS).map_err(db_err)?;
            let found = tokens
                .get(name)
                .map_err(db_err)?
                .map(|g| decode_token(g.value()))
                .transpose()?;
            if let Some(mut record) = found {
                record.last_used_at_ms = Some(at_ms);
                let json = encode("token", &record)?;
                tokens.insert(name, json.as_str()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    fn append_audit(&self, entry: &AuditEntry, entries_max: usize) -> StoreResult<u64> {
        let json = encode("audit entry", entry)?;
        let txn = self.database().begin_write().map_err(db_err)?;
        let id = {
            let mut audit = txn.open_table(AUDIT).map_err(db_err)?;
            let last = audit.last().map_err(db_err)?.map_or(0, |(k, _)| k.value());
            let id = last + 1;
            audit.insert(id, json.as_str()).map_err(db_err)?;
            // Keep the newest `entries_max` (at least this one).
            let keep = u64::try_from(entries_max.max(1)).unwrap_or(u64::MAX);
            if audit.len().map_err(db_err)? > keep {
                let cut = id.saturating_sub(keep);
                audit.retain_in(..=cut, |_, _| false).map_err(db_err)?;
            }
            id
        };
        txn.commit().map_err(db_err)?;
        Ok(id)
    }

    fn audit(&self, after: Option<u64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.read(|t| {
            let mut out = Vec::new();
            match after {
                Some(after) => {
                    let start = after.saturating_add(1);
                    for entry in t.audit.range(start..).map_err(db_err)?.take(limit) {
                        let (k, v) = entry.map_err(db_err)?;
                        out.push(decode_audit(k.value(), v.value())?);
                    }
                }
                None => {
                    for entry in t.audit.iter().map_err(db_err)?.rev().take(limit) {
                        let (k, v) = entry.map_err(db_err)?;
                        out.push(decode_audit(k.value(), v.value())?);
                    }
                    out.reverse();
                }
            }
            Ok(out)
        })
    }
}
