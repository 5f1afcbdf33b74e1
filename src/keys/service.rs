//! The gRPC faces of key management: `imprint.v2.KeyService` (Imprint's Keys
//! resource, with the gateway's policy in front) and
//! `imprint.gateway.v1.KeyManagementService`. Admin callers only: the auth
//! layer lets nobody else in.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

use super::Keys;
use crate::{
    audit::Outcome,
    auth::Caller,
    credentials::{fingerprint, Credential, DEFAULT_PRODUCT},
    pb::{
        gateway::v1::{
            key_management_service_server::{self, KeyManagementServiceServer},
            CredentialInfo, CredentialState, ListCredentialsRequest, ListCredentialsResponse,
            RotateCredentialRequest, RotateCredentialResponse,
        },
        imprint::v2::{
            key_service_server::{self, KeyServiceServer},
            CreateKeyRequest, DeleteKeyRequest, Key,
        },
    },
};

fn actor<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .map_or_else(|| "anonymous".to_owned(), |c| c.name.to_string())
}

/// Imprint's Keys calls are not idempotent by key: the key a DeleteKey
/// deletes travels in `Authorization`, which a recorded answer does not
/// tell apart, and a replayed CreateKey could not return the secret again.
/// The gateway refuses `idempotency-key` on them rather than answer a
/// different request from a record.
fn refuse_idempotency_key<T>(request: &Request<T>) -> Result<(), Status> {
    if request.metadata().contains_key("idempotency-key") {
        return Err(crate::errors::invalid_request(&[
            crate::translate::FieldViolation {
                field: "idempotency-key".into(),
                description: "KeyService calls take no idempotency-key: a repeated CreateKey creates another key, a repeated DeleteKey is harmless".into(),
            },
        ]));
    }
    Ok(())
}

fn request_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(crate::request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Serves `imprint.v2.KeyService`.
#[derive(Clone)]
pub struct KeyService {
    keys: Arc<Keys>,
}

impl KeyService {
    pub fn new(keys: Arc<Keys>) -> Self {
        Self { keys }
    }

    pub fn into_server(self) -> KeyServiceServer<Self> {
        KeyServiceServer::new(self)
    }

    /// Who asks (for the audit log), the request id, and the product the
    /// call is for (`x-imprint-product` within the caller's `products`).
    fn who<T>(&self, request: &Request<T>) -> Result<(String, String, String), Status> {
        let product = self.keys.gateway().product(
            request.metadata(),
            request.extensions().get::<Arc<Caller>>().map(|c| &**c),
        )?;
        let product = product.as_deref().unwrap_or(DEFAULT_PRODUCT).to_owned();
        Ok((actor(request), request_id(request), product))
    }
}

#[tonic::async_trait]
impl key_service_server::KeyService for KeyService {
    async fn create_key(
        &self,
        request: Request<CreateKeyRequest>,
    ) -> Result<Response<Key>, Status> {
        refuse_idempotency_key(&request)?;
        let (actor, request_id, product) = self.who(&request)?;
        let mut response = self.keys.gateway().call(request).await?;
        let key = response.get_mut();
        key.fingerprint = fingerprint(&key.key);
        // The secret goes to this admin caller, once; the audit log and the
        // log name it by fingerprint.
        self.keys.audit().record(
            &actor,
            "credential.create",
            &product,
            Outcome::Ok,
            &format!("created {} (not used by the gateway)", key.fingerprint),
            &request_id,
        );
        Ok(response)
    }

    async fn delete_key(
        &self,
        request: Request<DeleteKeyRequest>,
    ) -> Result<Response<Key>, Status> {
        refuse_idempotency_key(&request)?;
        let (actor, request_id, product) = self.who(&request)?;
        let (metadata, extensions, message) = request.into_parts();
        let store = self.keys.store();
        let active = store.get(&product);
        let retiring = store.retiring();
        let key: SecretString = match (message.key, message.credential_id) {
            (Some(k), None) if !k.trim().is_empty() => SecretString::from(k),
            (None, Some(id)) => {
                let held = |c: &Arc<Credential>| c.id() == id && c.product() == product;
                active
                    .iter()
                    .chain(retiring.iter())
                    .find(|c| held(c))
                    .map(|c| c.api_key().clone())
                    .ok_or_else(|| {
                        Status::not_found(
                            "credential_id names no credential of this product (see ListCredentials)",
                        )
                    })?
            }
            _ => {
                return Err(crate::errors::invalid_request(&[
                    crate::translate::FieldViolation {
                        field: "key".into(),
                        description: "set exactly one of key, credential_id".into(),
                    },
                ]))
            }
        };
        let fp = fingerprint(key.expose_secret());
        // In use by any product, not only the selected one (two products
        // may be configured with the same key).
        let used_by = store
            .products()
            .iter()
            .filter_map(|p| store.get(p))
            .find(|c| c.fingerprint() == fp)
            .map(|c| c.product().to_owned());
        let in_use = used_by.is_some();
        if let Some(used_by) = used_by
            .as_deref()
            .filter(|_| !message.force.unwrap_or(false))
        {
            return Err(Status::failed_precondition(format!(
                "{fp} is the credential the gateway is using for product '{used_by}'; rotate it (KeyManagementService/RotateCredential) or set force"
            )));
        }
        // Imprint's DELETE takes no parameter: the gateway-only fields stay here.
        let clean = Request::from_parts(metadata, extensions, DeleteKeyRequest::default());
        let result = self.keys.gateway().call_with(clean, Some(key)).await;
        let outcome = if result.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        self.keys.audit().record(
            &actor,
            "credential.delete",
            &product,
            outcome,
            &format!("{fp}{}", if in_use { " (in use, forced)" } else { "" }),
            &request_id,
        );
        let mut response = result?;
        if let Some(product) = used_by.as_deref() {
            tracing::error!(product, fingerprint = fp, "the credential in use was deleted (forced): calls of this product fail until a key is configured");
        }
        if retiring.iter().any(|c| c.fingerprint() == fp) {
            self.keys.retired_deleted(&product, &fp).await;
        }
        let answer = response.get_mut();
        // Imprint echoes the deleted key: it goes nowhere.
        answer.key.clear();
        answer.fingerprint = fp;
        Ok(response)
    }
}

/// Serves `imprint.gateway.v1.KeyManagementService`.
#[derive(Clone)]
pub struct KeyManagement {
    keys: Arc<Keys>,
}

impl KeyManagement {
    pub fn new(keys: Arc<Keys>) -> Self {
        Self { keys }
    }

    pub fn into_server(self) -> KeyManagementServiceServer<Self> {
        KeyManagementServiceServer::new(self)
    }
}

fn info(c: &Credential, state: CredentialState) -> CredentialInfo {
    CredentialInfo {
        id: c.id(),
        product: c.product().to_owned(),
        merchant_key_fingerprint: c.merchant_fingerprint().unwrap_or_default().to_owned(),
        fingerprint: c.fingerprint().to_owned(),
        created_at: c.created_at().map(prost_types::Timestamp::from),
        state: state as i32,
        rotated: c.created_at().is_some(),
    }
}

#[tonic::async_trait]
impl key_management_service_server::KeyManagementService for KeyManagement {
    async fn list_credentials(
        &self,
        request: Request<ListCredentialsRequest>,
    ) -> Result<Response<ListCredentialsResponse>, Status> {
        // Only the products the caller may use (an admin limited to some
        // products does not see the others' credentials).
        let caller = request.extensions().get::<Arc<Caller>>().cloned();
        let visible = |product: &str| caller.as_ref().is_none_or(|c| c.may_use_product(product));
        let store = self.keys.store();
        let mut data: Vec<CredentialInfo> = store
            .products()
            .iter()
            .filter(|p| visible(p))
            .filter_map(|p| store.get(p))
            .map(|c| info(&c, CredentialState::Active))
            .collect();
        data.extend(
            store
                .retiring()
                .iter()
                .filter(|c| visible(c.product()))
                .map(|c| info(c, CredentialState::Retiring)),
        );
        Ok(Response::new(ListCredentialsResponse { data }))
    }

    async fn rotate_credential(
        &self,
        request: Request<RotateCredentialRequest>,
    ) -> Result<Response<RotateCredentialResponse>, Status> {
        let actor = actor(&request);
        let request_id = request_id(&request);
        let product = request
            .get_ref()
            .product
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PRODUCT.to_owned());
        if let Some(caller) = request.extensions().get::<Arc<Caller>>() {
            if !caller.may_use_product(&product) {
                return Err(Status::permission_denied(format!(
                    "caller '{}' may not use product '{product}'",
                    caller.name
                )));
            }
        }
        let r = self
            .keys
            .rotate(Some(&product), &actor, &request_id)
            .await?;
        Ok(Response::new(RotateCredentialResponse {
            credential: Some(info(&r.credential, CredentialState::Active)),
            previous_fingerprint: r.previous_fingerprint,
            previous_deleted: r.previous_deleted,
            warning: r.warning,
        }))
    }
}
