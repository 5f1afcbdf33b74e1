//! Key management: the configured products' credentials, rotation, and
//! the Keys resource's gateway policy.
//!
//! A rotation ([`Keys::rotate`]) follows Imprint's documented procedure:
//! create a new key with the current one (`POST /v2/keys`), verify it with a
//! harmless read (`GET /v2/transaction_intents?limit=1`), persist it (see
//! [`vault`]), swap it in atomically (calls in flight finish on the old
//! key: the credentials layer holds the key an attempt was sent with, and
//! the rotation waits for those attempts), then delete the old key upstream
//! with the old key (`DELETE /v2/keys`). Before the swap, any failure
//! leaves the old key active and deletes the new one, or, when that delete
//! fails or the save may have landed, keeps it as retiring; a failed final
//! delete leaves both valid, says so; retiring keys are deleted by a retry
//! every `credentials.retry_interval`. A rotation runs in a task of its own
//! and its lock is released by a guard, whatever happens to its caller.
//!
//! Every gateway follows its vault every `credentials.sync_interval`: a key
//! rotated by another replica (Redis) or by `imprint-gateway rotate-key`
//! (the data directory) is swapped in the same way.

mod service;
pub mod vault;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tonic::{Request, Status};

pub use service::{KeyManagement, KeyService};
use vault::{DiskVault, KeyVault, RedisVault, Sealer, Stored};

use crate::{
    audit::{AuditLog, Outcome},
    config::Config,
    credentials::{fingerprint, Credential, CredentialStore, DEFAULT_PRODUCT},
    pb::imprint::v2::{CreateKeyRequest, DeleteKeyRequest, ListTransactionIntentsRequest},
    services::{Gateway, InternalActor, PRODUCT_HEADER},
};

/// The credentials the configuration names: the default product
/// (`IMPRINT_API_KEY`...) and each `[[credentials.products]]`.
pub fn configured(config: &Config) -> anyhow::Result<Vec<Credential>> {
    let scheme = config.upstream.auth_scheme;
    let mut out = Vec::new();
    if let Some(key) = config.upstream.api_key.clone() {
        out.push(
            Credential::new(key, config.upstream.merchant_key.clone(), scheme)
                .map_err(|e| anyhow::anyhow!("upstream.api_key: {e}"))?,
        );
    }
    for p in &config.credentials.products {
        let Some(key) = p.api_key.clone() else {
            anyhow::bail!("credentials.products: product '{}' has no key", p.name);
        };
        out.push(
            Credential::for_product(&p.name, key, p.merchant_key.clone(), scheme)
                .map_err(|e| anyhow::anyhow!("credentials.products '{}': {e}", p.name))?,
        );
    }
    Ok(out)
}

/// The vault the configuration asks for: Redis when `GATEWAY_REDIS_URL`
/// and a master key are set, else the data directory.
pub fn vault_from(config: &Config) -> anyhow::Result<Arc<dyn KeyVault>> {
    let sealer = match &config.credentials.master_key_file {
        Some(path) => Some(Sealer::new(&crate::config::read_master_key(path)?)),
        None => None,
    };
    match (&config.state.redis_url, sealer) {
        (Some(url), Some(sealer)) => Ok(Arc::new(
            RedisVault::new(url.expose_secret(), sealer).map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        (redis, sealer) => {
            if redis.is_some() {
                tracing::warn!(
                    "GATEWAY_REDIS_URL is set but GATEWAY_MASTER_KEY_FILE is not: rotated keys are kept under the data directory only, not shared with other replicas"
                );
            }
            Ok(Arc::new(DiskVault::new(&config.events.data_dir, sealer)))
        }
    }
}

/// Timing of the rotation machinery.
#[derive(Debug, Clone)]
pub struct KeySettings {
    pub drain_timeout: Duration,
    pub sync_interval: Duration,
    pub retry_interval: Duration,
    /// `None`: no scheduled rotation.
    pub rotate_every: Option<Duration>,
    /// Other gateways follow this one's vault even though it is not shared
    /// (`rotate-key` next to a running gateway on the same data directory):
    /// wait for them like for replicas before deleting the old key.
    pub others_follow: bool,
    /// Why this gateway may not rotate (`GATEWAY_REDIS_URL` without a
    /// master key: other replicas would keep using the key it deletes).
    pub rotation_refused: Option<String>,
}

impl KeySettings {
    pub fn from_config(config: &Config) -> Self {
        let c = &config.credentials;
        Self {
            drain_timeout: c.drain_timeout,
            sync_interval: c.sync_interval,
            retry_interval: c.retry_interval,
            rotate_every: (c.rotate_every_days > 0)
                .then(|| Duration::from_secs(u64::from(c.rotate_every_days) * 86_400)),
            others_follow: false,
            rotation_refused: (config.state.redis_url.is_some()
                && c.master_key_file.is_none())
            .then(|| {
                "GATEWAY_REDIS_URL is set but GATEWAY_MASTER_KEY_FILE is not: a rotation here would not reach the other replicas, which would keep using the key it deletes; set GATEWAY_MASTER_KEY_FILE".to_owned()
            }),
        }
    }
}

/// A product's rotation lock; released when dropped (a rotation that
/// panicked or was cut short frees it too), at once by [`Self::release`].
struct RotationLock {
    vault: Arc<dyn KeyVault>,
    product: Option<String>,
}

impl RotationLock {
    /// Takes the lock; `None` when another rotation holds it.
    async fn take(
        vault: &Arc<dyn KeyVault>,
        product: &str,
        ttl: Duration,
    ) -> Result<Option<Self>, vault::VaultError> {
        Ok(vault.lock(product, ttl).await?.then(|| Self {
            vault: vault.clone(),
            product: Some(product.to_owned()),
        }))
    }

    async fn release(mut self) {
        if let Some(product) = self.product.take() {
            self.vault.unlock(&product).await;
        }
    }
}

impl Drop for RotationLock {
    fn drop(&mut self) {
        let Some(product) = self.product.take() else {
            return;
        };
        let vault = self.vault.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { vault.unlock(&product).await });
        }
    }
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub credential: Arc<Credential>,
    pub previous_fingerprint: String,
    pub previous_deleted: bool,
    pub warning: String,
}

/// The gateway's key management.
pub struct Keys {
    gateway: Gateway,
    store: Arc<CredentialStore>,
    vault: Arc<dyn KeyVault>,
    audit: Arc<AuditLog>,
    /// The configured key's fingerprint per product: a stored rotation
    /// applies only to the key it started from.
    origins: parking_lot::Mutex<BTreeMap<String, String>>,
    /// The generation of the stored record each product's active key came
    /// from (0: the configured key, or a record from before generations).
    generations: parking_lot::Mutex<BTreeMap<String, u64>>,
    settings: KeySettings,
    /// One rotation or sync at a time in this process.
    busy: tokio::sync::Mutex<()>,
    started: SystemTime,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Keys {
    pub fn new(
        gateway: Gateway,
        store: Arc<CredentialStore>,
        vault: Arc<dyn KeyVault>,
        audit: Arc<AuditLog>,
        settings: KeySettings,
    ) -> Arc<Self> {
        let origins = store
            .products()
            .iter()
            .filter_map(|p| {
                store
                    .get(p)
                    .map(|c| (p.to_string(), c.fingerprint().to_owned()))
            })
            .collect();
        Arc::new(Self {
            gateway,
            store,
            vault,
            audit,
            origins: parking_lot::Mutex::new(origins),
            generations: parking_lot::Mutex::default(),
            settings,
            busy: tokio::sync::Mutex::new(()),
            started: SystemTime::now(),
        })
    }

    pub fn store(&self) -> &Arc<CredentialStore> {
        &self.store
    }

    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// A configured key re-read on SIGHUP: the same key as at start changes
    /// nothing (a rotated key stays in use); another key is the operator's
    /// new choice, used from now on (and the origin of later rotations).
    /// Whether it was applied.
    pub fn reconfigured(&self, credential: Credential) -> bool {
        let product = credential.product().to_owned();
        let mut origins = self.origins.lock();
        if origins.get(&product).map(String::as_str) == Some(credential.fingerprint()) {
            return false;
        }
        origins.insert(product.clone(), credential.fingerprint().to_owned());
        // A new origin starts a new line of records, from generation 0.
        self.generations.lock().remove(&product);
        self.store.replace(credential);
        true
    }

    /// A retiring key was deleted through KeyService/DeleteKey: forget it.
    pub async fn retired_deleted(&self, product: &str, fingerprint: &str) {
        self.store.forget_retiring(fingerprint);
        let _busy = self.busy.lock().await;
        if let Err(e) = self.forget_in_record(product, fingerprint).await {
            tracing::warn!(product, "could not record a retired key's deletion: {e}");
        }
    }

    /// Removes a deleted key from the stored record's retiring list, and
    /// changes nothing else (the active key and generation stay whatever
    /// the vault holds, however newer than this replica's).
    async fn forget_in_record(
        &self,
        product: &str,
        deleted: &str,
    ) -> Result<(), vault::VaultError> {
        self.vault
            .update(product, &|stored| {
                let stored = stored?;
                let mut record = stored.clone();
                record
                    .retiring
                    .retain(|k| fingerprint(k.expose_secret()) != deleted);
                (record.retiring.len() != stored.retiring.len()).then_some(record)
            })
            .await
    }

    /// Applies what the vault holds (at start, and every sync interval):
    /// a product whose stored key descends from its configured key uses the
    /// stored key. Returns how many products switched.
    pub async fn sync(&self) -> Result<usize, vault::VaultError> {
        let Ok(_busy) = self.busy.try_lock() else {
            return Ok(0);
        };
        let records = self.vault.load().await?;
        let mut switched = 0;
        for r in records {
            if self.origins.lock().get(&r.product) != Some(&r.origin) {
                continue;
            }
            let Some(current) = self.store.get(&r.product) else {
                continue;
            };
            // Keys a rotation elsewhere replaced: retried here too, but
            // only once that rotation had time to delete them itself
            // (its drain and wait for the replicas), never under it.
            let settled = self.settings.drain_timeout
                + 2 * self.settings.sync_interval
                + Duration::from_secs(5);
            let retiring: &[SecretString] =
                if unix_now().saturating_sub(r.created_at) > settled.as_secs() {
                    &r.retiring
                } else {
                    &[]
                };
            for old in retiring {
                if let Ok(c) = current.with_key(old.clone(), None) {
                    if c.fingerprint() != fingerprint(r.api_key.expose_secret()) {
                        self.store.retire(Arc::new(c));
                    }
                }
            }
            let stored_fp = fingerprint(r.api_key.expose_secret());
            let running = self.generation(&r.product);
            if current.fingerprint() == stored_fp {
                if r.generation > running {
                    self.generations
                        .lock()
                        .insert(r.product.clone(), r.generation);
                }
                continue;
            }
            // An older record (a lagging writer's) never replaces a newer key.
            if r.generation <= running && running > 0 {
                continue;
            }
            let created = UNIX_EPOCH + Duration::from_secs(r.created_at);
            let Ok(new) = current.with_key(r.api_key.clone(), Some(created)) else {
                continue;
            };
            if self.store.swap(new).is_ok() {
                self.generations
                    .lock()
                    .insert(r.product.clone(), r.generation);
                switched += 1;
                tracing::info!(
                    product = r.product,
                    fingerprint = stored_fp,
                    previous = current.fingerprint(),
                    "switched to a key rotated elsewhere ({})",
                    self.vault.describe()
                );
                self.audit.record(
                    "gateway",
                    "credential.sync",
                    &r.product,
                    Outcome::Ok,
                    &format!("now {stored_fp}, was {}", current.fingerprint()),
                    "",
                );
            }
        }
        Ok(switched)
    }

    /// An upstream call the gateway makes itself, authenticated with `key`.
    async fn upstream<E: crate::translate::Endpoint>(
        &self,
        message: E,
        product: &str,
        key: &SecretString,
        actor: &str,
    ) -> Result<E::Response, Status> {
        let mut request = Request::new(message);
        if product != DEFAULT_PRODUCT {
            let value = product
                .parse()
                .map_err(|_| Status::invalid_argument("product name"))?;
            request.metadata_mut().insert(PRODUCT_HEADER, value);
        }
        request
            .extensions_mut()
            .insert(InternalActor(Arc::from(actor)));
        self.gateway
            .call_with(request, Some(key.clone()))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Deletes `key` upstream (authenticated with itself). A 401-class
    /// answer means Imprint no longer knows the key: as good as deleted.
    async fn delete_upstream(
        &self,
        product: &str,
        key: &SecretString,
        actor: &str,
    ) -> Result<(), Status> {
        match self
            .upstream(DeleteKeyRequest::default(), product, key, actor)
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_key_refused(&s) => Ok(()),
            Err(s) => Err(s),
        }
    }

    /// Rotates `product`'s key (the default product when `None`), in a
    /// task of its own: a caller that goes away (a deadline, a cancelled
    /// RPC) does not cut a rotation in half; it finishes, is audited, and
    /// frees its lock.
    pub async fn rotate(
        self: &Arc<Self>,
        product: Option<&str>,
        actor: &str,
        request_id: &str,
    ) -> Result<Rotation, Status> {
        let keys = self.clone();
        let product = product.unwrap_or(DEFAULT_PRODUCT).to_owned();
        let (actor, request_id) = (actor.to_owned(), request_id.to_owned());
        tokio::spawn(async move { keys.rotate_audited(product, &actor, &request_id).await })
            .await
            .unwrap_or_else(|_| Err(Status::internal("the rotation stopped unexpectedly")))
    }

    async fn rotate_audited(
        &self,
        product: String,
        actor: &str,
        request_id: &str,
    ) -> Result<Rotation, Status> {
        if let Some(why) = &self.settings.rotation_refused {
            let refused = Status::failed_precondition(why.clone());
            self.audit.record(
                actor,
                "credential.rotate",
                &product,
                Outcome::Failed,
                refused.message(),
                request_id,
            );
            return Err(refused);
        }
        let result = self.rotate_inner(&product, actor).await;
        match &result {
            Ok(r) => self.audit.record(
                actor,
                "credential.rotate",
                &product,
                Outcome::Ok,
                &format!(
                    "now {}, was {}{}",
                    r.credential.fingerprint(),
                    r.previous_fingerprint,
                    if r.previous_deleted {
                        " (deleted)".to_owned()
                    } else {
                        format!(" (not deleted yet: {})", r.warning)
                    }
                ),
                request_id,
            ),
            Err(s) => self.audit.record(
                actor,
                "credential.rotate",
                &product,
                Outcome::Failed,
                s.message(),
                request_id,
            ),
        }
        result
    }

    async fn rotate_inner(&self, product: &str, actor: &str) -> Result<Rotation, Status> {
        if !self.store.knows(product) {
            return Err(Status::not_found(format!(
                "no product '{product}' is configured"
            )));
        }
        let _busy = self.busy.lock().await;
        // Longer than a rotation can take: a crashed rotator frees it.
        let lock_ttl = self.settings.drain_timeout
            + 4 * self.settings.sync_interval
            + Duration::from_secs(120);
        let lock = match RotationLock::take(&self.vault, product, lock_ttl).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                return Err(Status::aborted(format!(
                    "a rotation of product '{product}' is already running"
                )))
            }
            Err(e) => {
                return Err(Status::unavailable(format!(
                    "cannot take the rotation lock ({}): {e}",
                    self.vault.describe()
                )))
            }
        };
        let result = self.rotate_locked(product, actor).await;
        lock.release().await;
        result
    }

    async fn rotate_locked(&self, product: &str, actor: &str) -> Result<Rotation, Status> {
        let old = self.store.get(product).ok_or_else(|| {
            Status::failed_precondition(format!("product '{product}' has no key to rotate"))
        })?;
        let old_key = old.api_key().clone();
        // 1. Create the new key with the current one.
        let created = self
            .upstream(CreateKeyRequest {}, product, &old_key, actor)
            .await
            .map_err(|s| {
                Status::new(
                    s.code(),
                    format!(
                        "creating the new key failed; the current key stays active: {}",
                        s.message()
                    ),
                )
            })?;
        if created.key.is_empty() {
            return Err(Status::internal(
                "Imprint's answer to POST /v2/keys has no key; the current key stays active",
            ));
        }
        let new_key = SecretString::from(created.key);
        let new = old
            .with_key(new_key.clone(), Some(SystemTime::now()))
            .map_err(|e| Status::internal(format!("the new key is unusable: {e}")))?;
        let new_fp = new.fingerprint().to_owned();
        // 2. Verify it with a harmless read; 3. persist it. Either failing
        // deletes the new key and leaves the old one active.
        let verify = ListTransactionIntentsRequest {
            limit: Some(1),
            ..Default::default()
        };
        let verified = match self.upstream(verify, product, &new_key, actor).await {
            Ok(_) => Ok(()),
            // Answered without refusing the key: it works.
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::NotFound
                ) =>
            {
                Ok(())
            }
            Err(s) => Err(format!("verifying the new key failed: {}", s.message())),
        };
        let mut new_generation = 0;
        let abandoned = match verified {
            Ok(()) => match self
                .persist(product, &old, &new_key, std::slice::from_ref(&old_key))
                .await
            {
                Ok(generation) => {
                    new_generation = generation;
                    None
                }
                Err(e) => Some(e),
            }
            .map(|e| {
                (
                    format!(
                        "persisting the new key failed ({}): {e}",
                        self.vault.describe()
                    ),
                    true,
                )
            }),
            Err(e) => Some((e, false)),
        };
        if let Some((why, save_failed)) = abandoned {
            let cleanup = if save_failed {
                // The write may have landed (a timeout after the write):
                // the record may name the new key, so it is not deleted
                // now but kept as retiring, and the record written back.
                self.keep_retiring(product, &old, new).await
            } else {
                match self.delete_upstream(product, &new_key, actor).await {
                    Ok(()) => "the new key was deleted".to_owned(),
                    Err(s) => format!(
                        "deleting the new key failed too ({}); {}",
                        s.message(),
                        self.keep_retiring(product, &old, new).await
                    ),
                }
            };
            tracing::warn!(
                product,
                new = new_fp,
                "rotation abandoned: {why}; {cleanup}"
            );
            return Err(Status::failed_precondition(format!(
                "{why}; {cleanup}; the current key stays active"
            )));
        }
        // 4. Swap: new calls use the new key from here on.
        let replaced = self
            .store
            .swap(new)
            .map_err(|_| Status::internal("product vanished during rotation"))?;
        drop(replaced);
        self.generations
            .lock()
            .insert(product.to_owned(), new_generation);
        let credential = self
            .store
            .get(product)
            .ok_or_else(|| Status::internal("product vanished during rotation"))?;
        tracing::info!(
            product,
            fingerprint = credential.fingerprint(),
            previous = old.fingerprint(),
            "credential rotated; new calls use the new key"
        );
        // 5. Let calls still using the old key finish (here, and on the
        // other replicas, which switch within a sync interval).
        if !CredentialStore::drained(&old, self.settings.drain_timeout).await {
            tracing::warn!(
                product,
                "calls still hold the old key after credentials.drain_timeout; deleting it anyway"
            );
        }
        if self.vault.shared() || self.settings.others_follow {
            tokio::time::sleep(2 * self.settings.sync_interval + Duration::from_millis(200)).await;
        }
        // 6. Delete the old key, with the old key.
        let previous_fingerprint = old.fingerprint().to_owned();
        match self.delete_upstream(product, &old_key, actor).await {
            Ok(()) => {
                if let Err(e) = self.forget_in_record(product, &previous_fingerprint).await {
                    tracing::warn!(product, "could not record the old key's deletion: {e}");
                }
                Ok(Rotation {
                    credential,
                    previous_fingerprint,
                    previous_deleted: true,
                    warning: String::new(),
                })
            }
            Err(s) => {
                let warning = format!(
                    "deleting the old key failed ({}): it stays valid and is retried every {}",
                    s.message(),
                    humantime::format_duration(self.settings.retry_interval)
                );
                tracing::warn!(product, previous = previous_fingerprint, "{warning}");
                self.store.retire(old);
                Ok(Rotation {
                    credential,
                    previous_fingerprint,
                    previous_deleted: false,
                    warning,
                })
            }
        }
    }

    /// Keeps an abandoned rotation's new key as retiring (listed by
    /// ListCredentials, deleted by the background retry) and records it
    /// with `current` still active. What was done, for the caller.
    async fn keep_retiring(&self, product: &str, current: &Credential, new: Credential) -> String {
        let fp = new.fingerprint().to_owned();
        self.store.retire(Arc::new(new));
        let every = humantime::format_duration(self.settings.retry_interval);
        match self
            .persist(product, current, &current.api_key().clone(), &[])
            .await
        {
            Ok(generation) => {
                self.generations.lock().insert(product.to_owned(), generation);
                format!(
                "the new key {fp} is kept as retiring and its deletion is retried every {every}"
                )
            }
            Err(e) => format!(
                "the new key {fp} is kept as retiring (recording it failed: {e}) and its deletion is retried every {every}"
            ),
        }
    }

    /// This replica's generation of `product`.
    fn generation(&self, product: &str) -> u64 {
        self.generations.lock().get(product).copied().unwrap_or(0)
    }

    /// Writes `product`'s record: `key` active, `retiring` pending deletion
    /// (with those already pending here and in the record, minus the active
    /// key), as a generation newer than both the record's and this
    /// replica's. Called under the rotation lock. Returns the generation.
    async fn persist(
        &self,
        product: &str,
        current: &Credential,
        key: &SecretString,
        retiring: &[SecretString],
    ) -> Result<u64, vault::VaultError> {
        let origin = self
            .origins
            .lock()
            .get(product)
            .cloned()
            .unwrap_or_else(|| current.fingerprint().to_owned());
        let key_fp = fingerprint(key.expose_secret());
        let mut pending: Vec<SecretString> = self
            .store
            .retiring()
            .iter()
            .filter(|c| c.product() == product)
            .map(|c| c.api_key().clone())
            .collect();
        pending.extend(retiring.iter().cloned());
        let running = self.generation(product);
        let written = parking_lot::Mutex::new(0);
        self.vault
            .update(product, &|stored| {
                let mut all = pending.clone();
                let mut generation = running;
                if let Some(stored) = stored.filter(|s| s.origin == origin) {
                    all.extend(stored.retiring.iter().cloned());
                    generation = generation.max(stored.generation);
                }
                let mut seen = std::collections::BTreeSet::new();
                all.retain(|k| {
                    let fp = fingerprint(k.expose_secret());
                    fp != key_fp && seen.insert(fp)
                });
                *written.lock() = generation + 1;
                Some(Stored {
                    product: product.to_owned(),
                    origin: origin.clone(),
                    api_key: key.clone(),
                    created_at: unix_now(),
                    retiring: all,
                    generation: generation + 1,
                })
            })
            .await?;
        Ok(written.into_inner())
    }

    /// Retries deleting replaced keys whose final delete failed.
    pub async fn retry_retiring(&self) {
        for old in self.store.retiring() {
            let product = old.product().to_owned();
            let fp = old.fingerprint().to_owned();
            // A key the vault made active again (an abandoned rotation's
            // save that landed after all) is no longer retiring.
            if self
                .store
                .get(&product)
                .is_some_and(|c| c.fingerprint() == fp)
            {
                self.store.forget_retiring(&fp);
                continue;
            }
            match self
                .delete_upstream(&product, old.api_key(), "gateway")
                .await
            {
                Ok(()) => {
                    self.store.forget_retiring(&fp);
                    if let Err(e) = self.forget_in_record(&product, &fp).await {
                        tracing::warn!(product, "could not record a retired key's deletion: {e}");
                    }
                    self.audit.record(
                        "gateway",
                        "credential.delete_retired",
                        &product,
                        Outcome::Ok,
                        &format!("deleted {fp}"),
                        "",
                    );
                }
                Err(s) => {
                    tracing::warn!(
                        product,
                        fingerprint = fp,
                        "retired key still not deleted: {}",
                        s.message()
                    );
                    self.audit.record(
                        "gateway",
                        "credential.delete_retired",
                        &product,
                        Outcome::Failed,
                        &format!("{fp}: {:?}", s.code()),
                        "",
                    );
                }
            }
        }
    }

    /// Rotates every product whose key is older than `rotate_every`
    /// (a configured key's age counts from this gateway's start).
    async fn rotate_due(self: &Arc<Self>, every: Duration) {
        for product in self.store.products() {
            let Some(c) = self.store.get(&product) else {
                continue;
            };
            let born = c.created_at().unwrap_or(self.started);
            if SystemTime::now().duration_since(born).unwrap_or_default() < every {
                continue;
            }
            if let Err(s) = self.rotate(Some(&product), "rotation-scheduler", "").await {
                tracing::warn!(
                    product = &*product,
                    "scheduled rotation failed: {}",
                    s.message()
                );
            }
        }
    }

    /// Starts following the vault, retrying retired keys' deletion, and
    /// (when configured) scheduled rotation, until `stopping`.
    pub fn spawn_background(self: &Arc<Self>, stopping: watch::Receiver<bool>) {
        let keys = self.clone();
        let mut stop = stopping.clone();
        tokio::spawn(async move {
            let mut last_retry = tokio::time::Instant::now();
            let mut last_schedule = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(keys.settings.sync_interval) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                if let Err(e) = keys.sync().await {
                    tracing::warn!("cannot read rotated keys ({}): {e}", keys.vault.describe());
                }
                if last_retry.elapsed() >= keys.settings.retry_interval {
                    last_retry = tokio::time::Instant::now();
                    keys.retry_retiring().await;
                }
                if let Some(every) = keys.settings.rotate_every {
                    if last_schedule.elapsed() >= Duration::from_secs(3600).min(every) {
                        last_schedule = tokio::time::Instant::now();
                        keys.rotate_due(every).await;
                    }
                }
            }
        });
    }
}

/// Whether Imprint refused the key itself (401, mapped to INTERNAL with
/// `ErrorInfo` reason naming the credential; or a 403).
fn is_key_refused(s: &Status) -> bool {
    s.code() == tonic::Code::PermissionDenied
        || (s.code() == tonic::Code::Internal
            && s.message().contains("rejected the gateway's credential"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use parking_lot::Mutex;
    use tower::service_fn;

    use super::*;
    use crate::{
        credentials::AuthScheme,
        idempotency::MemoryStore,
        stack::{stack_over, StackConfig},
        upstream::{UpstreamError, UpstreamRequest, UpstreamResponse},
    };

    type Log = Arc<Mutex<Vec<(String, String, String)>>>;

    /// An in-memory Imprint: creates `sk_new_<n>`, answers reads and deletes.
    fn imprint(log: Log, slow_read: Duration) -> crate::upstream::UpstreamService {
        let n = Arc::new(AtomicU32::new(0));
        let svc = service_fn(move |r: UpstreamRequest| {
            let (log, n) = (log.clone(), n.clone());
            async move {
                if r.call.method == http::Method::GET {
                    tokio::time::sleep(slow_read).await;
                }
                let auth = r
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let path = r.call.path_and_query.clone();
                log.lock()
                    .push((r.call.method.to_string(), path.clone(), auth));
                let body = match (r.call.method.as_str(), path.as_str()) {
                    ("POST", "/v2/keys") => format!(
                        r#"{{"key":"sk_new_{}"}}"#,
                        n.fetch_add(1, Ordering::SeqCst) + 1
                    ),
                    _ => r#"{"data":[],"has_more":false,"total":0}"#.to_owned(),
                };
                Ok::<_, UpstreamError>(UpstreamResponse {
                    status: StatusCode::OK,
                    headers: HeaderMap::new(),
                    body: Bytes::from(body),
                    decoded: None,
                })
            }
        });
        tower::util::BoxCloneSyncService::new(svc)
    }

    fn keys(configured: &str, dir: &std::path::Path, log: Log) -> Arc<Keys> {
        keys_over(
            configured,
            Arc::new(DiskVault::new(dir, None)),
            log,
            Duration::ZERO,
        )
    }

    fn keys_over(
        configured: &str,
        vault: Arc<dyn KeyVault>,
        log: Log,
        slow_read: Duration,
    ) -> Arc<Keys> {
        let store = Arc::new(CredentialStore::new(Some(
            Credential::new(
                SecretString::from(configured.to_owned()),
                None,
                AuthScheme::Bearer,
            )
            .unwrap(),
        )));
        let upstream = stack_over(
            imprint(log, slow_read),
            store.clone(),
            Arc::new(MemoryStore::new()),
            &StackConfig::default(),
        );
        let gateway = Gateway::new(upstream, Duration::from_secs(5), store.clone());
        Keys::new(
            gateway,
            store,
            vault,
            Arc::new(AuditLog::new(100)),
            KeySettings {
                drain_timeout: Duration::from_secs(1),
                sync_interval: Duration::from_millis(100),
                retry_interval: Duration::from_secs(1),
                rotate_every: None,
                others_follow: false,
                rotation_refused: None,
            },
        )
    }

    #[tokio::test]
    async fn scheduled_rotation_rotates_due_keys_only_and_restores_by_origin() {
        let dir = std::env::temp_dir().join(format!("igw-keys-sched-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log: Log = Arc::default();
        let k = keys("sk_old", &dir, log.clone());
        // Due (any age is at least zero): rotated by the scheduler.
        k.rotate_due(Duration::ZERO).await;
        assert_eq!(
            k.store.current().unwrap().fingerprint(),
            fingerprint("sk_new_1")
        );
        let calls: Vec<_> = log
            .lock()
            .iter()
            .map(|(m, p, a)| format!("{m} {p} {a}"))
            .collect();
        assert_eq!(
            calls,
            [
                "POST /v2/keys Bearer sk_old",
                "GET /v2/transaction_intents?limit=1 Bearer sk_new_1",
                "DELETE /v2/keys Bearer sk_old",
            ]
        );
        let (events, _) = k.audit.list(&crate::audit::Query {
            action: Some("credential.rotate".into()),
            limit: 10,
            ..Default::default()
        });
        assert_eq!(events[0].actor, "rotation-scheduler");
        // Not due: a key made just now is younger than an hour.
        k.rotate_due(Duration::from_secs(3600)).await;
        assert_eq!(log.lock().len(), 3);

        // A restart with the same configured key takes the rotated one...
        let again = keys("sk_old", &dir, Arc::default());
        assert_eq!(again.sync().await.unwrap(), 1);
        assert_eq!(
            again.store.current().unwrap().fingerprint(),
            fingerprint("sk_new_1")
        );
        // ...another configured key (the operator's) wins over the record.
        let other = keys("sk_operator", &dir, Arc::default());
        assert_eq!(other.sync().await.unwrap(), 0);
        assert_eq!(
            other.store.current().unwrap().fingerprint(),
            fingerprint("sk_operator")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn calls(log: &Log) -> Vec<String> {
        log.lock()
            .iter()
            .map(|(m, p, a)| format!("{m} {p} {a}"))
            .collect()
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("igw-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn a_dropped_rotation_lock_is_released() {
        let dir = temp_dir("lockdrop");
        let vault: Arc<dyn KeyVault> = Arc::new(DiskVault::new(&dir, None));
        let ttl = Duration::from_secs(60);
        let lock = RotationLock::take(&vault, "default", ttl).await.unwrap();
        assert!(lock.is_some());
        assert!(RotationLock::take(&vault, "default", ttl)
            .await
            .unwrap()
            .is_none());
        drop(lock);
        let mut freed = false;
        for _ in 0..100 {
            if let Some(again) = RotationLock::take(&vault, "default", ttl).await.unwrap() {
                again.release().await;
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed, "a dropped lock was never released");
    }

    #[tokio::test]
    async fn a_rotation_whose_caller_went_away_finishes_and_frees_its_lock() {
        let dir = temp_dir("cancel");
        let log: Log = Arc::default();
        let k = keys_over(
            "sk_old",
            Arc::new(DiskVault::new(&dir, None)),
            log.clone(),
            Duration::from_millis(300),
        );
        // The caller's deadline passes during the verification read.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), k.rotate(None, "ops", ""))
                .await
                .is_err()
        );
        let mut second = None;
        for _ in 0..50 {
            match k.rotate(None, "ops", "").await {
                Ok(r) => {
                    second = Some(r);
                    break;
                }
                Err(s) if s.code() == tonic::Code::Aborted => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("{s:?}"),
            }
        }
        let second = second.expect("the rotation lock was never freed");
        // The first rotation finished (sk_new_1, old key deleted) and the
        // second started from it.
        assert_eq!(second.previous_fingerprint, fingerprint("sk_new_1"));
        assert_eq!(second.credential.fingerprint(), fingerprint("sk_new_2"));
        assert_eq!(
            calls(&log)
                .iter()
                .filter(|c| c.starts_with("DELETE"))
                .cloned()
                .collect::<Vec<_>>(),
            [
                "DELETE /v2/keys Bearer sk_old",
                "DELETE /v2/keys Bearer sk_new_1"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The data directory, whose first save lands but reports a failure
    /// (a write whose answer was lost).
    struct LostAnswer {
        inner: DiskVault,
        failures: AtomicU32,
    }

    #[async_trait::async_trait]
    impl KeyVault for LostAnswer {
        async fn load(&self) -> Result<Vec<Stored>, vault::VaultError> {
            self.inner.load().await
        }
        async fn update(
            &self,
            product: &str,
            change: &vault::Change<'_>,
        ) -> Result<(), vault::VaultError> {
            self.inner.update(product, change).await?;
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(vault::VaultError("timed out".into()));
            }
            Ok(())
        }
        fn shared(&self) -> bool {
            false
        }
        async fn lock(&self, product: &str, ttl: Duration) -> Result<bool, vault::VaultError> {
            self.inner.lock(product, ttl).await
        }
        async fn unlock(&self, product: &str) {
            self.inner.unlock(product).await
        }
        fn describe(&self) -> &'static str {
            "data directory"
        }
    }

    #[tokio::test]
    async fn a_failed_save_keeps_the_new_key_as_retiring_instead_of_deleting_it() {
        let dir = temp_dir("lostsave");
        let log: Log = Arc::default();
        let vault = LostAnswer {
            inner: DiskVault::new(&dir, None),
            failures: AtomicU32::new(1),
        };
        let k = keys_over("sk_old", Arc::new(vault), log.clone(), Duration::ZERO);
        let err = k.rotate(None, "ops", "").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("kept as retiring"), "{err:?}");
        assert_eq!(
            calls(&log),
            [
                "POST /v2/keys Bearer sk_old",
                "GET /v2/transaction_intents?limit=1 Bearer sk_new_1",
            ]
        );
        assert_eq!(
            k.store.current().unwrap().fingerprint(),
            fingerprint("sk_old")
        );
        let retiring: Vec<_> = k
            .store
            .retiring()
            .iter()
            .map(|c| c.fingerprint().to_owned())
            .collect();
        assert_eq!(retiring, [fingerprint("sk_new_1")]);
        // The record names the old key again: a restart keeps it.
        let again = keys("sk_old", &dir, Arc::default());
        assert_eq!(again.sync().await.unwrap(), 0);
        assert_eq!(
            again.store.current().unwrap().fingerprint(),
            fingerprint("sk_old")
        );
        // The retry deletes the new key, with itself.
        k.retry_retiring().await;
        assert_eq!(
            calls(&log).last().unwrap(),
            "DELETE /v2/keys Bearer sk_new_1"
        );
        assert!(k.store.retiring().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_lagging_replica_never_writes_back_or_adopts_an_older_key() {
        let dir = temp_dir("generations");
        let disk = DiskVault::new(&dir, None);
        let a = keys("sk_old", &dir, Arc::default());
        // Started with `a`, never synced since: it still runs sk_old.
        let b = keys("sk_old", &dir, Arc::default());
        a.rotate(None, "ops", "").await.unwrap();
        let stored = disk.load().await.unwrap().remove(0);
        assert_eq!(stored.generation, 1);
        assert_eq!(
            fingerprint(stored.api_key.expose_secret()),
            fingerprint("sk_new_1")
        );

        // b's retry paths change the retiring list only: sk_old is never
        // written back over a's rotation.
        disk.update("default", &|s| {
            let mut r = s.unwrap().clone();
            r.retiring.push(SecretString::from("sk_gone"));
            Some(r)
        })
        .await
        .unwrap();
        b.retired_deleted("default", &fingerprint("sk_gone")).await;
        let b_current = b.store.current().unwrap();
        b.store.retire(Arc::new(
            b_current
                .with_key(SecretString::from("sk_stale"), None)
                .unwrap(),
        ));
        b.retry_retiring().await;
        assert!(b.store.retiring().is_empty());
        let stored = disk.load().await.unwrap().remove(0);
        assert_eq!(
            fingerprint(stored.api_key.expose_secret()),
            fingerprint("sk_new_1")
        );
        assert_eq!(stored.generation, 1);
        assert!(stored.retiring.is_empty());

        // b adopts the newer record.
        assert_eq!(b.sync().await.unwrap(), 1);
        assert_eq!(
            b.store.current().unwrap().fingerprint(),
            fingerprint("sk_new_1")
        );

        // a rotates again (generation 2); an older record written by a
        // lagging writer afterwards is not adopted.
        a.rotate(None, "ops", "").await.unwrap();
        let newest = disk.load().await.unwrap().remove(0);
        assert_eq!(newest.generation, 2);
        assert_eq!(
            fingerprint(newest.api_key.expose_secret()),
            fingerprint("sk_new_2")
        );
        disk.save(&stored).await.unwrap();
        assert_eq!(a.sync().await.unwrap(), 0);
        assert_eq!(
            a.store.current().unwrap().fingerprint(),
            fingerprint("sk_new_2")
        );
        // A replica still at generation 0 takes even a record without a
        // generation (from before generations existed).
        let c = keys("sk_old", &dir, Arc::default());
        disk.save(&Stored {
            generation: 0,
            ..newest
        })
        .await
        .unwrap();
        assert_eq!(c.sync().await.unwrap(), 1);
        assert_eq!(a.sync().await.unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_reconfigured_key_follows_rotations_made_from_it_elsewhere() {
        let dir = temp_dir("regen");
        let a = keys("sk_old", &dir, Arc::default());
        a.rotate(None, "ops", "").await.unwrap();
        a.rotate(None, "ops", "").await.unwrap();
        // The operator configures another key (SIGHUP) ...
        let operator =
            Credential::new(SecretString::from("sk_operator"), None, AuthScheme::Bearer).unwrap();
        assert!(a.reconfigured(operator));
        // ... which another replica, started with it, rotates (generation 1
        // of the new origin): `a` adopts it although it ran generation 2.
        let b = keys("sk_operator", &dir, Arc::default());
        b.rotate(None, "ops", "").await.unwrap();
        assert_eq!(a.sync().await.unwrap(), 1);
        assert_eq!(
            a.store.current().unwrap().fingerprint(),
            b.store.current().unwrap().fingerprint()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
