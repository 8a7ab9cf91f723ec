//! Stored secrets, for the API and the CLI's `--db` alike: values go in and
//! never come out; every change is audited by name and version.

use super::{Admin, AdminError, Caller, Done, Status};
use crate::secrets::{self, SecretError, SecretKeys};
use serde_json::{Value, json};

impl From<SecretError> for AdminError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Store(s) => AdminError::from(s),
            SecretError::NoKey | SecretError::UnknownKey { .. } | SecretError::Unseal { .. } => {
                AdminError::Conflict(e.to_string())
            }
            SecretError::Invalid(_) | SecretError::BadValue(_) | SecretError::BadKey(_) => {
                AdminError::invalid("value", e.to_string())
            }
            SecretError::KeyFile { .. } => AdminError::Conflict(e.to_string()),
        }
    }
}

impl Admin {
    /// The stored secrets: names, versions and when each was set.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn secret_list(&self) -> Result<Value, AdminError> {
        let list = self.store.secret_list().await?;
        Ok(Value::Array(
            list.iter().map(secrets::secret_view).collect(),
        ))
    }

    /// Seals `value` with `keys` and stores it as the next version of `name`.
    ///
    /// # Errors
    ///
    /// A bad name or value, no key to seal with, or a store error.
    pub async fn secret_set(
        &self,
        caller: &Caller,
        keys: &SecretKeys,
        name: &str,
        value: &str,
    ) -> Result<Done, AdminError> {
        self.audited(caller, "secret.set", name, async {
            let meta = secrets::secret_set(&*self.store, keys, name, value).await?;
            let summary = json!({ "name": meta.name, "version": meta.version });
            Ok(Done::new(Status::Ok, secrets::secret_view(&meta), summary))
        })
        .await
    }

    /// Deletes a secret: jobs whose grants name it fail until it is set again.
    ///
    /// # Errors
    ///
    /// No such secret, or a store error.
    pub async fn secret_delete(&self, caller: &Caller, name: &str) -> Result<Done, AdminError> {
        self.audited(caller, "secret.delete", name, async {
            if !self.store.secret_delete(name).await? {
                return Err(AdminError::NotFound(format!("no secret {name:?}")));
            }
            Ok(Done::new(
                Status::Ok,
                json!({ "deleted": name }),
                json!({ "name": name }),
            ))
        })
        .await
    }
}
