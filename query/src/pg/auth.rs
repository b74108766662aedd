//! Login: the API key as password, and the bound on connections.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use futures::Sink;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::{
    ClientInfo, ConnectionHandle, ConnectionManager, PgWireConnectionState, PgWireServerHandlers,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tarn_catalog::auth::{KeyRing, Scope};
use tarn_lake::ErrorKind;

use super::errors::user_error;

/// Startup with the API key as password (cleartext), checked against the key ring's hashes;
/// no password when no keys are configured.
pub(super) struct KeyStartup {
    pub keys: Arc<KeyRing>,
    pub connections: Arc<ConnectionManager>,
    pub parameters: DefaultServerParameterProvider,
    pub pids: RandomPidSecretKeyGenerator,
}

impl KeyStartup {
    /// Registers the connection (for cancel requests) and says the session is ready.
    async fn accept<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret_key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let (handle, guard) = self.connections.register(pid, secret_key);
        client.session_extensions().insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert(guard);
        finish_authentication(client, &self.parameters).await
    }
}

#[async_trait]
impl StartupHandler for KeyStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                if self.keys.is_open() {
                    return self.accept(client).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                futures::SinkExt::send(
                    client,
                    PgWireBackendMessage::Authentication(Authentication::CleartextPassword),
                )
                .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                let user = client.metadata().get(pgwire::api::METADATA_USER).cloned();
                match self.keys.authorize(Some(&password.password), false, None, &Scope::Query) {
                    Ok(caller) => {
                        // The connection's statements count against this key's rate limit.
                        client.session_extensions().insert(caller);
                        tracing::debug!(user = user.as_deref().unwrap_or(""), "Postgres login");
                        return self.accept(client).await;
                    }
                    Err(e) => {
                        tracing::info!(user = user.as_deref().unwrap_or(""), reason = %e.message, "Postgres login refused");
                        let code = match e.kind {
                            ErrorKind::Forbidden => "28000",
                            _ => "28P01",
                        };
                        let mut info = ErrorInfo::new("FATAL".into(), code.into(), e.message);
                        info.hint =
                            Some("the password is a Tarn API key with the query scope".to_string());
                        return Err(PgWireError::UserError(Box::new(info)));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The handlers of a connection over the bound: it is refused at startup.
pub(super) struct TooManyConnections;

struct RefuseStartup;

#[async_trait]
impl StartupHandler for RefuseStartup {
    async fn on_startup<C>(
        &self,
        _client: &mut C,
        _message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(user_error("FATAL", "53300", "sorry, too many clients already".into()))
    }
}

impl PgWireServerHandlers for TooManyConnections {
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(RefuseStartup)
    }
}
