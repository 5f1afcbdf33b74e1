//! Where rotated keys are kept, so that a restart (and, with Redis, every
//! replica) uses the key a rotation made. Behind [`KeyVault`], with a
//! data-directory implementation and a Redis one.
//!
//! A record holds, per product, the active key, the keys it replaced whose
//! deletion upstream is still pending, and the fingerprint of the configured
//! key the rotations started from (`origin`): when the configuration names
//! another key, the configuration wins and the record is ignored.
//!
//! On disk: `<GATEWAY_DATA_DIR>/credentials.json`, mode 0600, written to a
//! temporary file first and renamed over (never half written); sealed with
//! the master key when one is configured (records written before a master
//! key was configured are read as they are and sealed by the next save). A
//! record that cannot be read skips its product only, with a warning. In Redis: one hash field per
//! product, always sealed with AES-256-GCM under the master key.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use aes_gcm::{
    aead::{Aead, KeyInit},
    Aes256Gcm, Nonce,
};
use base64::Engine as _;
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A product's rotated keys.
#[derive(Clone)]
pub struct Stored {
    pub product: String,
    /// Fingerprint of the configured key the rotations started from.
    pub origin: String,
    pub api_key: SecretString,
    /// Unix seconds of the rotation that made `api_key`.
    pub created_at: u64,
    /// Replaced keys not deleted upstream yet.
    pub retiring: Vec<SecretString>,
    /// Counts the product's rotations (a record from before generations
    /// counts as 0): a replica adopts a record only when it is newer than
    /// the one it runs with.
    pub generation: u64,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("product", &self.product)
            .field("origin", &self.origin)
            .field(
                "api_key",
                &crate::credentials::fingerprint(self.api_key.expose_secret()),
            )
            .field("retiring", &self.retiring.len())
            .field("generation", &self.generation)
            .finish()
    }
}

/// The serialized form: exists only while being written or read.
#[derive(Serialize, Deserialize)]
struct Plain {
    product: String,
    origin: String,
    api_key: String,
    created_at: u64,
    #[serde(default)]
    retiring: Vec<String>,
    #[serde(default)]
    generation: u64,
}

impl From<&Stored> for Plain {
    fn from(s: &Stored) -> Self {
        Self {
            product: s.product.clone(),
            origin: s.origin.clone(),
            api_key: s.api_key.expose_secret().to_owned(),
            created_at: s.created_at,
            retiring: s
                .retiring
                .iter()
                .map(|k| k.expose_secret().to_owned())
                .collect(),
            generation: s.generation,
        }
    }
}

impl From<Plain> for Stored {
    fn from(p: Plain) -> Self {
        Self {
            product: p.product,
            origin: p.origin,
            api_key: SecretString::from(p.api_key),
            created_at: p.created_at,
            retiring: p.retiring.into_iter().map(SecretString::from).collect(),
            generation: p.generation,
        }
    }
}

/// A vault failure; never holds a secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VaultError(pub String);

/// Where rotated keys live.
#[async_trait::async_trait]
pub trait KeyVault: Send + Sync {
    /// Every product's record.
    async fn load(&self) -> Result<Vec<Stored>, VaultError>;
    /// Read-modify-write of one product's record, atomic against every
    /// other writer of the vault: `change` gets the stored record (if any)
    /// and returns the one to write, or `None` to leave it as it is. It may
    /// run more than once (Redis retries when another writer came first).
    async fn update(&self, product: &str, change: &Change<'_>) -> Result<(), VaultError>;
    /// Writes one product's record (replacing it).
    async fn save(&self, record: &Stored) -> Result<(), VaultError> {
        self.update(&record.product, &|_| Some(record.clone()))
            .await
    }
    /// Whether other replicas read the same records (a rotation then waits
    /// for them to switch before deleting the old key).
    fn shared(&self) -> bool;
    /// Takes the rotation lock of `product` for `ttl`; whether it got it.
    async fn lock(&self, product: &str, ttl: Duration) -> Result<bool, VaultError>;
    /// Releases it.
    async fn unlock(&self, product: &str);
    /// What it is, for logs (`data directory`, `Redis`).
    fn describe(&self) -> &'static str;
}

/// What [`KeyVault::update`] does to a record.
pub type Change<'a> = dyn Fn(Option<&Stored>) -> Option<Stored> + Send + Sync + 'a;

/// AES-256-GCM under the master key: `base64(nonce || ciphertext)`.
#[derive(Clone)]
pub struct Sealer(Aes256Gcm);

impl Sealer {
    pub fn new(master_key: &[u8; 32]) -> Self {
        Self(Aes256Gcm::new(master_key.into()))
    }

    fn seal(&self, plain: &[u8]) -> Result<String, VaultError> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), plain)
            .map_err(|_| VaultError("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    fn open(&self, text: &str) -> Result<Vec<u8>, VaultError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| VaultError("a sealed record is not base64".into()))?;
        if bytes.len() < 12 {
            return Err(VaultError("a sealed record is too short".into()));
        }
        let (nonce, sealed) = bytes.split_at(12);
        self.0
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| {
                VaultError(
                    "a sealed record does not open with this master key (GATEWAY_MASTER_KEY_FILE)"
                        .into(),
                )
            })
    }
}

fn encode(record: &Stored, sealer: Option<&Sealer>) -> Result<String, VaultError> {
    let json = serde_json::to_vec(&Plain::from(record))
        .map_err(|e| VaultError(format!("encoding a record: {e}")))?;
    match sealer {
        Some(s) => s.seal(&json),
        None => String::from_utf8(json).map_err(|_| VaultError("not UTF-8".into())),
    }
}

fn decode(text: &str, sealer: Option<&Sealer>) -> Result<Stored, VaultError> {
    let json = match sealer {
        Some(s) => s.open(text)?,
        None => text.as_bytes().to_vec(),
    };
    let plain: Plain = serde_json::from_slice(&json).map_err(|e| {
        VaultError(format!(
            "a stored record is malformed: {}",
            e.classify() as u8
        ))
    })?;
    Ok(plain.into())
}

/// Every record that decodes: one that does not (malformed, sealed under
/// another master key) skips only its product, with a warning naming it.
fn decode_each<'a>(
    records: impl Iterator<Item = (&'a String, &'a String)>,
    decode: impl Fn(&str) -> Result<Stored, VaultError>,
) -> Vec<Stored> {
    records
        .filter_map(|(product, text)| match decode(text) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(
                    product = product.as_str(),
                    "ignoring the product's stored rotation, which cannot be read: {e}"
                );
                None
            }
        })
        .collect()
}

/// A record written as plain JSON (before a master key was configured).
fn is_plain(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// `<data dir>/credentials.json`: records by product, each sealed when a
/// master key is configured.
///
/// Other processes on the same directory (`imprint-gateway rotate-key`
/// beside a running gateway) are kept apart by file locks
/// (`std::fs::File::lock`, flock on Unix): `.credentials.lock` around every
/// read-modify-write of the file (waited for, up to [`FILE_LOCK_WAIT`]), and
/// `.rotation-<product in hex>.lock`, held for a whole rotation (not waited
/// for: a second rotation is refused).
pub struct DiskVault {
    path: PathBuf,
    sealer: Option<Sealer>,
    /// The rotation locks this process holds, with their lock files.
    locks: tokio::sync::Mutex<BTreeMap<String, std::fs::File>>,
    /// Serializes this process's read-modify-writes of the file.
    writing: tokio::sync::Mutex<()>,
}

/// How long a write waits for another process's write to the data directory.
pub const FILE_LOCK_WAIT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize, Default)]
struct DiskFile {
    version: u32,
    /// product → the record (JSON, or sealed).
    products: BTreeMap<String, String>,
}

impl DiskVault {
    pub fn new(data_dir: &Path, sealer: Option<Sealer>) -> Self {
        Self {
            path: data_dir.join("credentials.json"),
            sealer,
            locks: tokio::sync::Mutex::new(Default::default()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Opens (creating, 0600) a lock file in the data directory.
    fn lock_file(&self, name: &str) -> Result<std::fs::File, VaultError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = self.dir();
        std::fs::create_dir_all(dir)
            .map_err(|e| VaultError(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| VaultError(format!("opening {}: {e}", path.display())))
    }

    /// The data directory's write lock, shared with other processes;
    /// released when the file is dropped.
    async fn write_lock(&self) -> Result<std::fs::File, VaultError> {
        let file = self.lock_file(".credentials.lock")?;
        let deadline = tokio::time::Instant::now() + FILE_LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(VaultError(format!(
                        "locking {}: {e}",
                        self.dir().join(".credentials.lock").display()
                    )))
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(VaultError(format!(
                    "another process kept {} locked for {}",
                    self.dir().join(".credentials.lock").display(),
                    humantime::format_duration(FILE_LOCK_WAIT)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn read(&self) -> Result<DiskFile, VaultError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| {
                VaultError(format!("{} is not a credentials file", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DiskFile::default()),
            Err(e) => Err(VaultError(format!("reading {}: {e}", self.path.display()))),
        }
    }

    /// Temp file (0600) in the same directory, fsync, rename over.
    fn write(&self, file: &DiskFile) -> Result<(), VaultError> {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| VaultError(format!("creating {}: {e}", dir.display())))?;
        let tmp = dir.join(format!(
            ".credentials.json.{}.{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let io = |e: std::io::Error| VaultError(format!("writing {}: {e}", tmp.display()));
        let bytes = serde_json::to_vec_pretty(file).map_err(|e| VaultError(e.to_string()))?;
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename itself survives a crash once the directory is synced.
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

#[async_trait::async_trait]
impl KeyVault for DiskVault {
    async fn load(&self) -> Result<Vec<Stored>, VaultError> {
        let file = self.read()?;
        // A plain record under a master key was written before the key was
        // configured: read as is, sealed by the next save.
        Ok(decode_each(file.products.iter(), |text| {
            let sealer = self.sealer.as_ref().filter(|_| !is_plain(text));
            decode(text, sealer)
        }))
    }

    async fn update(&self, product: &str, change: &Change<'_>) -> Result<(), VaultError> {
        let _writing = self.writing.lock().await;
        let _across_processes = self.write_lock().await?;
        let mut file = self.read()?;
        let current = file.products.get(product).and_then(|text| {
            let sealer = self.sealer.as_ref().filter(|_| !is_plain(text));
            decode(text, sealer).ok()
        });
        let Some(record) = change(current.as_ref()) else {
            return Ok(());
        };
        file.version = 1;
        if let Some(sealer) = &self.sealer {
            // No plain key stays on disk once a master key is configured.
            for text in file.products.values_mut() {
                if is_plain(text) {
                    if let Ok(plain) = decode(text, None) {
                        *text = encode(&plain, Some(sealer))?;
                    }
                }
            }
        }
        file.products.insert(
            record.product.clone(),
            encode(&record, self.sealer.as_ref())?,
        );
        self.write(&file)
    }

    fn shared(&self) -> bool {
        false
    }

    async fn lock(&self, product: &str, _ttl: Duration) -> Result<bool, VaultError> {
        let mut locks = self.locks.lock().await;
        if locks.contains_key(product) {
            return Ok(false);
        }
        let hex: String = product.bytes().map(|b| format!("{b:02x}")).collect();
        let file = self.lock_file(&format!(".rotation-{hex}.lock"))?;
        match file.try_lock() {
            Ok(()) => {
                locks.insert(product.to_owned(), file);
                Ok(true)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(VaultError(format!(
                "locking the rotation of '{product}': {e}"
            ))),
        }
    }

    async fn unlock(&self, product: &str) {
        if let Some(file) = self.locks.lock().await.remove(product) {
            let _ = file.unlock();
        }
    }

    fn describe(&self) -> &'static str {
        "data directory"
    }
}

/// Records in the Redis hash `imprint-gateway:credentials`, sealed.
pub struct RedisVault {
    client: redis::Client,
    sealer: Sealer,
    /// Identifies this process's rotation locks.
    token: String,
}

const HASH: &str = "imprint-gateway:credentials";
const OP_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisVault {
    pub fn new(url: &str, sealer: Sealer) -> Result<Self, VaultError> {
        let client = redis::Client::open(url)
            .map_err(|_| VaultError("GATEWAY_REDIS_URL is not usable".into()))?;
        Ok(Self {
            client,
            sealer,
            token: uuid::Uuid::new_v4().to_string(),
        })
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, VaultError> {
        tokio::time::timeout(OP_TIMEOUT, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| VaultError("Redis did not answer in time".into()))?
            .map_err(|e| VaultError(format!("Redis: {}", e.kind_name())))
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, VaultError> {
        let mut conn = self.conn().await?;
        tokio::time::timeout(OP_TIMEOUT, cmd.query_async(&mut conn))
            .await
            .map_err(|_| VaultError("Redis did not answer in time".into()))?
            .map_err(|e| VaultError(format!("Redis: {}", e.kind_name())))
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    /// The error's kind only: a Redis error can quote the URL.
    fn kind_name(&self) -> String {
        format!("{:?}", self.kind())
    }
}

#[async_trait::async_trait]
impl KeyVault for RedisVault {
    async fn load(&self) -> Result<Vec<Stored>, VaultError> {
        let all: BTreeMap<String, String> = self.run(redis::cmd("HGETALL").arg(HASH)).await?;
        Ok(decode_each(all.iter(), |text| {
            decode(text, Some(&self.sealer))
        }))
    }

    /// HGET, change, then a compare-and-set script that writes only if
    /// the field still holds what was read; retried when it does not.
    async fn update(&self, product: &str, change: &Change<'_>) -> Result<(), VaultError> {
        let script = redis::Script::new(
            "if (redis.call('HGET', KEYS[1], ARGV[1]) or '') == ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1 end return 0",
        );
        for _ in 0..8 {
            let text: Option<String> = self.run(redis::cmd("HGET").arg(HASH).arg(product)).await?;
            let current = text
                .as_deref()
                .and_then(|t| decode(t, Some(&self.sealer)).ok());
            let Some(record) = change(current.as_ref()) else {
                return Ok(());
            };
            let sealed = encode(&record, Some(&self.sealer))?;
            let mut conn = self.conn().await?;
            let written: i64 = tokio::time::timeout(
                OP_TIMEOUT,
                script
                    .key(HASH)
                    .arg(product)
                    .arg(text.as_deref().unwrap_or(""))
                    .arg(sealed)
                    .invoke_async(&mut conn),
            )
            .await
            .map_err(|_| VaultError("Redis did not answer in time".into()))?
            .map_err(|e| VaultError(format!("Redis: {}", e.kind_name())))?;
            if written == 1 {
                return Ok(());
            }
        }
        Err(VaultError(
            "the stored record kept changing under this write (Redis)".into(),
        ))
    }

    fn shared(&self) -> bool {
        true
    }

    async fn lock(&self, product: &str, ttl: Duration) -> Result<bool, VaultError> {
        let got: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(format!("{HASH}:lock:{product}"))
                    .arg(&self.token)
                    .arg("NX")
                    .arg("PX")
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            )
            .await?;
        Ok(got.is_some())
    }

    async fn unlock(&self, product: &str) {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        if let Ok(mut conn) = self.conn().await {
            let _ = tokio::time::timeout(
                OP_TIMEOUT,
                script
                    .key(format!("{HASH}:lock:{product}"))
                    .arg(&self.token)
                    .invoke_async::<i64>(&mut conn),
            )
            .await;
        }
    }

    fn describe(&self) -> &'static str {
        "Redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Stored {
        Stored {
            product: "default".into(),
            origin: "sha256:abc".into(),
            api_key: SecretString::from("sk_rotated_secret"),
            created_at: 1,
            retiring: vec![SecretString::from("sk_old_secret")],
            generation: 1,
        }
    }

    #[test]
    fn sealed_records_hide_the_key_and_need_the_master_key() {
        let sealer = Sealer::new(&[7; 32]);
        let text = encode(&record(), Some(&sealer)).unwrap();
        assert!(!text.contains("sk_rotated_secret") && !text.contains("sk_old"));
        let back = decode(&text, Some(&sealer)).unwrap();
        assert_eq!(back.api_key.expose_secret(), "sk_rotated_secret");
        assert!(decode(&text, Some(&Sealer::new(&[8; 32]))).is_err());
        assert!(!format!("{back:?}").contains("sk_rotated"));
    }

    #[tokio::test]
    async fn a_master_key_added_later_reads_plain_records_and_seals_them_on_save() {
        let dir = std::env::temp_dir().join(format!("igw-vault-reseal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let plain = DiskVault::new(&dir, None);
        let cobrand = Stored {
            product: "cobrand".into(),
            ..record()
        };
        plain.save(&record()).await.unwrap();
        plain.save(&cobrand).await.unwrap();
        let sealed = DiskVault::new(&dir, Some(Sealer::new(&[7; 32])));
        assert_eq!(sealed.load().await.unwrap().len(), 2);
        // One save seals every record.
        let again = Stored {
            api_key: SecretString::from("sk_rotated_again"),
            ..record()
        };
        sealed.save(&again).await.unwrap();
        let text = std::fs::read_to_string(sealed.path()).unwrap();
        for secret in ["sk_rotated_secret", "sk_old_secret", "sk_rotated_again"] {
            assert!(!text.contains(secret), "{secret} on disk");
        }
        let file: DiskFile = serde_json::from_str(&text).unwrap();
        assert!(file.products.values().all(|t| !is_plain(t)));
        let loaded = sealed.load().await.unwrap();
        assert_eq!(loaded.len(), 2);
        assert!(loaded
            .iter()
            .any(|r| r.api_key.expose_secret() == "sk_rotated_again"));
        // A record sealed under another master key skips its product only.
        DiskVault::new(&dir, Some(Sealer::new(&[8; 32])))
            .save(&Stored {
                product: "third".into(),
                ..record()
            })
            .await
            .unwrap();
        let mut products: Vec<_> = sealed
            .load()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.product)
            .collect();
        products.sort();
        assert_eq!(products, ["cobrand", "default"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_file_is_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("igw-vault-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let vault = DiskVault::new(&dir, None);
        vault.save(&record()).await.unwrap();
        let mode = std::fs::metadata(vault.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = vault.load().await.unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].retiring.len(), 1);
        // No temporary file is left behind (the lock file stays).
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".credentials.lock", "credentials.json"]);
        assert!(vault.lock("default", Duration::from_secs(1)).await.unwrap());
        assert!(!vault.lock("default", Duration::from_secs(1)).await.unwrap());
        vault.unlock("default").await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_record_without_a_generation_reads_as_generation_0() {
        let dir = std::env::temp_dir().join(format!("igw-vault-gen0-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let vault = DiskVault::new(&dir, None);
        let old = r#"{"product":"default","origin":"sha256:abc","api_key":"sk_x","created_at":1}"#;
        let file = DiskFile {
            version: 1,
            products: [("default".to_owned(), old.to_owned())].into(),
        };
        std::fs::write(vault.path(), serde_json::to_vec(&file).unwrap()).unwrap();
        let loaded = vault.load().await.unwrap();
        assert_eq!(loaded[0].generation, 0);
        // An update that returns nothing leaves the record as it is.
        vault.update("default", &|_| None).await.unwrap();
        let text = std::fs::read_to_string(vault.path()).unwrap();
        assert!(text.contains("created_at"));
        vault
            .update("default", &|s| {
                Some(Stored {
                    generation: s.unwrap().generation + 1,
                    ..s.unwrap().clone()
                })
            })
            .await
            .unwrap();
        assert_eq!(vault.load().await.unwrap()[0].generation, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn two_handles_on_one_directory_are_kept_apart_by_file_locks() {
        let dir = std::env::temp_dir().join(format!("igw-vault-flock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Two handles: as a gateway and `rotate-key` would open the directory.
        let gateway = DiskVault::new(&dir, None);
        let command = DiskVault::new(&dir, None);
        let ttl = Duration::from_secs(60);
        assert!(gateway.lock("default", ttl).await.unwrap());
        // The rotation lock is refused to the other handle, not waited for...
        assert!(!command.lock("default", ttl).await.unwrap());
        // ...per product.
        assert!(command.lock("co:brand", ttl).await.unwrap());
        gateway.unlock("default").await;
        assert!(command.lock("default", ttl).await.unwrap());
        command.unlock("default").await;
        command.unlock("co:brand").await;

        // A write waits while another handle holds the write lock.
        gateway.save(&record()).await.unwrap();
        let held = gateway.write_lock().await.unwrap();
        let command = std::sync::Arc::new(command);
        let writer = {
            let command = command.clone();
            tokio::spawn(async move {
                command
                    .update("default", &|s| {
                        Some(Stored {
                            generation: s.unwrap().generation + 1,
                            ..s.unwrap().clone()
                        })
                    })
                    .await
            })
        };
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!writer.is_finished(), "wrote under another handle's lock");
        }
        assert_eq!(gateway.load().await.unwrap()[0].generation, 1);
        drop(held);
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(gateway.load().await.unwrap()[0].generation, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
