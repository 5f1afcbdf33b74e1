//! Adds the active Imprint credential to each upstream request.

use std::sync::Arc;

use futures::future::{self, Either, Ready};
use http::header::AUTHORIZATION;
use tower::{Layer, Service};

use super::{authorization, Credential, CredentialStore, DEFAULT_PRODUCT};
use crate::upstream::{UpstreamError, UpstreamRequest};

const MERCHANT_KEY: &str = "x-imprint-merchant-key";

/// Builds [`Credentials`].
#[derive(Debug, Clone)]
pub struct CredentialsLayer {
    store: Arc<CredentialStore>,
}

impl CredentialsLayer {
    pub fn new(store: Arc<CredentialStore>) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for CredentialsLayer {
    type Service = Credentials<S>;
    fn layer(&self, inner: S) -> Credentials<S> {
        Credentials {
            inner,
            store: self.store.clone(),
        }
    }
}

/// Sets `authorization` (Basic or Bearer) and, when configured,
/// `x-imprint-merchant-key`, from the credential of the call's product (or
/// the key the call must be authenticated with: a DeleteKey). Without a
/// credential the call fails before anything is sent. The attempt holds the
/// credential until it ends, so a rotation can wait for the calls still
/// using the old key before deleting it.
#[derive(Debug, Clone)]
pub struct Credentials<S> {
    inner: S,
    store: Arc<CredentialStore>,
}

pin_project_lite::pin_project! {
    /// An attempt's future, holding the credential it was sent with.
    pub struct Holding<F> {
        #[pin]
        inner: F,
        credential: Arc<Credential>,
    }
}

impl<F: std::future::Future> std::future::Future for Holding<F> {
    type Output = F::Output;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

impl<S> Service<UpstreamRequest> for Credentials<S>
where
    S: Service<UpstreamRequest, Error = UpstreamError>,
{
    type Response = S::Response;
    type Error = UpstreamError;
    type Future = Either<Holding<S::Future>, Ready<Result<S::Response, UpstreamError>>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), UpstreamError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: UpstreamRequest) -> Self::Future {
        let product = req.product.as_deref().unwrap_or(DEFAULT_PRODUCT);
        let Some(credential) = self.store.get(product) else {
            return Either::Right(future::ready(Err(UpstreamError::NoCredential)));
        };
        let header = match &req.authenticate_with {
            Some(key) => match authorization(key, credential.scheme()) {
                Ok(h) => h,
                Err(_) => return Either::Right(future::ready(Err(UpstreamError::NoCredential))),
            },
            None => credential.authorization.clone(),
        };
        req.headers.insert(AUTHORIZATION, header);
        match &credential.merchant_header {
            Some(m) => {
                req.headers.insert(MERCHANT_KEY, m.clone());
            }
            None => {
                req.headers.remove(MERCHANT_KEY);
            }
        }
        Either::Left(Holding {
            inner: self.inner.call(req),
            credential,
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::{
        credentials::{AuthScheme, Credential},
        upstream::test_support::request,
    };

    fn echo(
    ) -> impl Service<UpstreamRequest, Response = http::HeaderMap, Error = UpstreamError, Future: Send>
           + Clone {
        service_fn(|r: UpstreamRequest| async move { Ok::<_, UpstreamError>(r.headers) })
    }

    #[tokio::test]
    async fn basic_with_merchant_key() {
        let cred = Credential::new(
            SecretString::from("sk_test"),
            Some(SecretString::from("mk_1")),
            AuthScheme::Basic,
        )
        .unwrap();
        let store = Arc::new(CredentialStore::new(Some(cred)));
        let headers = CredentialsLayer::new(store)
            .layer(echo())
            .oneshot(request())
            .await
            .unwrap();
        // base64("sk_test:")
        assert_eq!(headers[AUTHORIZATION], "Basic c2tfdGVzdDo=");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert_eq!(headers[MERCHANT_KEY], "mk_1");
    }

    #[tokio::test]
    async fn bearer_and_rotation() {
        let store = Arc::new(CredentialStore::new(Some(
            Credential::new(SecretString::from("k1"), None, AuthScheme::Bearer).unwrap(),
        )));
        let svc = CredentialsLayer::new(store.clone()).layer(echo());
        assert_eq!(
            svc.clone().oneshot(request()).await.unwrap()[AUTHORIZATION],
            "Bearer k1"
        );
        store.replace(Credential::new(SecretString::from("k2"), None, AuthScheme::Bearer).unwrap());
        let h = svc.oneshot(request()).await.unwrap();
        assert_eq!(h[AUTHORIZATION], "Bearer k2");
        assert!(h.get(MERCHANT_KEY).is_none());
    }

    #[tokio::test]
    async fn no_credential_fails_before_sending() {
        let store = Arc::new(CredentialStore::new(None));
        let err = CredentialsLayer::new(store)
            .layer(echo())
            .oneshot(request())
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::NoCredential));
        let cred =
            Credential::new(SecretString::from("secret-key"), None, AuthScheme::Basic).unwrap();
        assert!(!format!("{cred:?}").contains("secret-key"));
    }
}
