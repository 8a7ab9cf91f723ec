//! Modules: push (validate and store), roll back, list.

use super::{Admin, AdminError, Caller, Done, Status};
use crate::engine::modules::{PushError, parse_ref, push_bytes};
use crate::store::{ModuleRef, ModuleRollback};
use serde_json::{Value, json};

impl From<PushError> for AdminError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Rejected(r) => AdminError::Rejected {
                field: "body",
                message: format!("module rejected ({}): {}", r.code.as_str(), r.detail),
            },
            PushError::Describe(e) => AdminError::Rejected {
                field: "body",
                message: format!("module rejected: describe() failed: {e}"),
            },
            PushError::Refused(e) => AdminError::Rejected {
                field: "name",
                message: format!("module rejected: {e}"),
            },
            PushError::Invalid { field, message } => {
                AdminError::invalid(field, format!("{field}: {message}"))
            }
            PushError::Store(e) => AdminError::Store(e),
        }
    }
}

impl Admin {
    /// Stored modules and versions (of one name, or all), newest first.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn module_list(&self, name: Option<&str>) -> Result<Value, AdminError> {
        Ok(serde_json::to_value(self.store.module_list(name).await?).unwrap_or_default())
    }

    /// Validates a component (compile, contract, `describe`) and stores it
    /// under `name`/`version` (default: what `describe` says). The same bytes
    /// pushed again restore a version withdrawn by a rollback. Answers
    /// `{"module": record, "describe": info}`.
    ///
    /// # Errors
    ///
    /// A module that cannot run or is misnamed ([`AdminError::Rejected`]), a
    /// bad name or version, a version that exists with other bytes (a store
    /// conflict), or a store error.
    pub async fn module_push(
        &self,
        caller: &Caller,
        bytes: Vec<u8>,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<Done, AdminError> {
        let size = bytes.len();
        let target = name.unwrap_or("module");
        self.audited(caller, "module.push", target, async {
            if bytes.is_empty() {
                return Err(AdminError::BadRequest(
                    "the request body is empty; send the component's bytes (Content-Type: application/wasm)"
                        .into(),
                ));
            }
            let (record, info) = push_bytes(
                &self.store,
                &self.runtime()?,
                bytes,
                name,
                version,
                Some(&self.metrics),
                true,
            )
            .await?;
            let mut done = Done::new(
                Status::Created,
                json!({ "module": record, "describe": info }),
                json!({ "digest": record.digest, "bytes": size }),
            );
            done.target = Some(format!("{}@{}", record.name, record.version));
            Ok(done)
        })
        .await
    }

    /// Makes jobs following module `name` run the previous (or `to`) version
    /// from their next fire; pinned jobs are unaffected. Answers `{"module": record}`.
    ///
    /// # Errors
    ///
    /// Not a module name, no such module or version, or a store error.
    pub async fn module_rollback(
        &self,
        caller: &Caller,
        name: &str,
        to: Option<&str>,
    ) -> Result<Done, AdminError> {
        self.audited(caller, "module.rollback", name, async {
            let Some(ModuleRef::Latest(name)) = parse_ref(name) else {
                return Err(AdminError::BadRequest(format!(
                    "{name:?} is not a module name"
                )));
            };
            let rollback = ModuleRollback {
                name: name.clone(),
                to: to.map(str::to_string),
            };
            let Some(record) = self.store.module_rollback(&rollback).await? else {
                return Err(AdminError::NotFound(match to {
                    Some(v) => format!("no module {name}@{v}"),
                    None => format!("no module {name}"),
                }));
            };
            let mut done = Done::new(
                Status::Ok,
                json!({ "module": record }),
                json!({ "digest": record.digest, "to": to }),
            );
            done.target = Some(format!("{}@{}", record.name, record.version));
            Ok(done)
        })
        .await
    }
}
