//! The Extensions API (2020-01-01) as one execution environment keeps it: which extensions have
//! registered, for which events, where each is in its lifecycle, and which of them the
//! environment is waiting for. No I/O: the environment's task drives it (a call from the
//! Runtime API, an invocation, a shutdown) and asks it whether a phase may end
//! ([`Extensions::init_done`], [`Extensions::invoke_done`]), so every rule is a unit test here.
//!
//! Lambda's rules, as the Runtime Interface Emulator implements them: an extension registers
//! once with its file's name (an external one, launched from `/opt/extensions`) or any other
//! name (an internal one, registered from the runtime's process, which may not ask for
//! `SHUTDOWN`); at most ten; registration closes when the runtime first asks for an event;
//! init ends when the runtime and every extension have called their `/next`; an invocation is
//! over only when every extension registered for `INVOKE` has called `/next` again. The first
//! fatal error (`Extension.InitError`, `Extension.ExitError`, `Extension.Crash`) is kept and
//! fails the phase it happened in.

use std::collections::VecDeque;

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;
use tokio::sync::oneshot;

use crate::error::Fatal;
use crate::runtime_api::wire::{self, ApiError, Body};

/// Lambda's limit on extensions per function.
pub const MAX_EXTENSIONS: usize = 10;

/// `Lambda-Extension-Name`
pub const NAME: &str = "lambda-extension-name";
/// `Lambda-Extension-Identifier`
pub const IDENTIFIER: &str = "lambda-extension-identifier";
/// `Lambda-Extension-Accept-Feature`
pub const ACCEPT_FEATURE: &str = "lambda-extension-accept-feature";
/// `Lambda-Extension-Function-Error-Type`
pub const FUNCTION_ERROR_TYPE: &str = "lambda-extension-function-error-type";
/// `Lambda-Extension-Event-Identifier` (set on `INVOKE` events, as the emulator does).
pub const EVENT_IDENTIFIER: &str = "lambda-extension-event-identifier";

/// The answer to an extension's call.
pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// One parsed Extensions API call.
#[derive(Debug)]
pub enum ExtensionCall {
    /// `POST /2020-01-01/extension/register`
    Register {
        /// `Lambda-Extension-Name`, possibly empty.
        name: String,
        /// `Lambda-Extension-Accept-Feature`, comma-separated.
        accept_feature: Option<String>,
        /// `{"events": [...]}`
        body: Bytes,
        /// The identifier and the response body.
        reply: Reply<Registered>,
    },
    /// `GET /2020-01-01/extension/event/next`
    Next {
        /// `Lambda-Extension-Identifier`, when sent.
        id: Option<String>,
        /// The next event.
        reply: Reply<ExtensionEvent>,
    },
    /// `POST /2020-01-01/extension/init/error` or `.../exit/error`
    Error {
        /// Which of the two.
        kind: ErrorKind,
        /// `Lambda-Extension-Identifier`, when sent.
        id: Option<String>,
        /// `Lambda-Extension-Function-Error-Type`, when sent.
        error_type: Option<String>,
        /// Accepted, or why not.
        reply: Reply<()>,
    },
}

/// `init/error` or `exit/error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `POST /extension/init/error`: failed after registering, before its first `/next`.
    Init,
    /// `POST /extension/exit/error`: about to exit after an unexpected failure.
    Exit,
}

/// A successful registration.
#[derive(Debug, Clone)]
pub struct Registered {
    /// `Lambda-Extension-Identifier`.
    pub id: String,
    /// The response body.
    pub body: serde_json::Value,
}

/// An event for an extension's `/next`.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtensionEvent {
    /// An invocation has started.
    Invoke {
        /// The invocation's request id.
        request_id: String,
        /// When it times out, epoch ms (the runtime's `Lambda-Runtime-Deadline-Ms`).
        deadline_ms: u64,
        /// The invoked function's ARN.
        function_arn: String,
        /// The X-Ray trace header, if any.
        trace_id: Option<String>,
    },
    /// The environment is shutting down.
    Shutdown {
        /// `spindown`, `timeout` or `failure` (lowercase on the wire).
        reason: ShutdownReason,
        /// When the shutdown budget ends, epoch ms.
        deadline_ms: u64,
    },
}

impl ExtensionEvent {
    /// The event's JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self {
            ExtensionEvent::Invoke {
                request_id,
                deadline_ms,
                function_arn,
                trace_id,
            } => {
                let mut body = json!({
                    "eventType": "INVOKE",
                    "deadlineMs": deadline_ms,
                    "requestId": request_id,
                    "invokedFunctionArn": function_arn,
                });
                if let Some(trace) = trace_id {
                    body["tracing"] = json!({"type": "X-Amzn-Trace-Id", "value": trace});
                }
                body
            }
            ExtensionEvent::Shutdown {
                reason,
                deadline_ms,
            } => json!({
                "eventType": "SHUTDOWN",
                "deadlineMs": deadline_ms,
                "shutdownReason": reason.as_str(),
            }),
        }
    }
}

impl Registered {
    /// 200: the identifier in `Lambda-Extension-Identifier`, the function's identity in the
    /// body.
    pub(crate) fn into_response(self) -> http::Response<Body> {
        let mut response = wire::json_response(StatusCode::OK, self.body.to_string());
        if let Ok(v) = http::HeaderValue::from_str(&self.id) {
            response.headers_mut().insert(IDENTIFIER, v);
        }
        response
    }
}

impl ExtensionEvent {
    /// 200 to an extension's `/next`: the event; an `INVOKE` carries an event identifier, as
    /// the emulator sends it.
    pub(crate) fn into_response(self) -> http::Response<Body> {
        let invoke = matches!(self, ExtensionEvent::Invoke { .. });
        let mut response = wire::json_response(StatusCode::OK, self.body().to_string());
        if invoke && let Ok(v) = http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            response.headers_mut().insert(EVENT_IDENTIFIER, v);
        }
        response
    }
}

/// Why an environment shuts down, as extensions are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// An ordinary end: idle, or the server stopping.
    Spindown,
    /// An invocation ran out of time.
    Timeout,
    /// Something failed: a crash, running out of memory, an extension's error.
    Failure,
}

impl ShutdownReason {
    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownReason::Spindown => "spindown",
            ShutdownReason::Timeout => "timeout",
            ShutdownReason::Failure => "failure",
        }
    }
}

/// Where an extension is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Registered, has not yet called `/next`.
    Registered,
    /// Waiting at `/next` (or about to: an event is queued for it).
    Ready,
    /// Has an event, has not called `/next` since.
    Running,
    /// Reported `init/error` or `exit/error`: nothing more is accepted from it.
    Failed,
}

/// One registered extension.
#[derive(Debug)]
struct Extension {
    id: String,
    name: String,
    invoke: bool,
    shutdown: bool,
    state: State,
    /// Its `/next`, while it waits.
    parked: Option<Reply<ExtensionEvent>>,
    /// Events it has not yet fetched.
    queued: VecDeque<ExtensionEvent>,
}

/// What the register response tells an extension about the function.
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    /// `functionName`
    pub name: String,
    /// `functionVersion`
    pub version: String,
    /// `handler`
    pub handler: String,
    /// `accountId`, given to extensions that accept the feature.
    pub account_id: String,
}

/// The Extensions API state of one environment.
#[derive(Debug)]
pub struct Extensions {
    info: FunctionInfo,
    /// The file names of the external extensions launched (from `/opt/extensions`).
    launched: Vec<String>,
    registered: Vec<Extension>,
    /// Closed when the runtime first asks for an event: later internal registrations fail.
    registration_closed: bool,
    fatal: Option<Fatal>,
}

fn forbidden(error_type: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        error_type,
        message: message.into(),
    }
}

impl Extensions {
    /// The state of an environment whose external extensions are `launched` (file names).
    pub fn new(info: FunctionInfo, launched: Vec<String>) -> Extensions {
        Extensions {
            info,
            launched,
            registered: Vec::new(),
            registration_closed: false,
            fatal: None,
        }
    }

    /// Whether any extension runs or may still register: without one, nothing here changes
    /// how the environment behaves.
    pub fn any(&self) -> bool {
        !self.launched.is_empty() || !self.registered.is_empty()
    }

    /// Whether an external extension was launched.
    pub fn any_external(&self) -> bool {
        !self.launched.is_empty()
    }

    /// The names of the registered extensions and their events, in registration order.
    pub fn summary(&self) -> Vec<(String, Vec<&'static str>)> {
        self.registered
            .iter()
            .map(|e| {
                let mut events = Vec::new();
                if e.invoke {
                    events.push("INVOKE");
                }
                if e.shutdown {
                    events.push("SHUTDOWN");
                }
                (e.name.clone(), events)
            })
            .collect()
    }

    /// The first fatal error, if any.
    pub fn fatal(&self) -> Option<&Fatal> {
        self.fatal.as_ref()
    }

    fn set_fatal(&mut self, error_type: &'static str, message: String) {
        if self.fatal.is_none() {
            self.fatal = Some(Fatal {
                error_type,
                message,
            });
        }
    }

    /// Handles an Extensions API call. Returns whether it changed what the environment may be
    /// waiting for (an extension became ready, or failed).
    pub fn on_call(&mut self, call: ExtensionCall) -> bool {
        match call {
            ExtensionCall::Register {
                name,
                accept_feature,
                body,
                reply,
            } => {
                let _ = reply.send(self.register(&name, accept_feature.as_deref(), &body));
                false
            }
            ExtensionCall::Next { id, reply } => self.next(id.as_deref(), reply),
            ExtensionCall::Error {
                kind,
                id,
                error_type,
                reply,
            } => {
                let outcome = self.error(kind, id.as_deref(), error_type);
                let changed = outcome.is_ok();
                let _ = reply.send(outcome);
                changed
            }
        }
    }

    fn register(
        &mut self,
        name: &str,
        accept_feature: Option<&str>,
        body: &[u8],
    ) -> Result<Registered, ApiError> {
        if name.is_empty() {
            return Err(forbidden(
                "Extension.InvalidExtensionName",
                "Empty extension name",
            ));
        }
        let request: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| forbidden("InvalidRequestFormat", e.to_string()))?;
        if request.get("configurationKeys").is_some() {
            return Err(forbidden(
                "InvalidRequestFormat",
                "configurationKeys are deprecated; use environment variables instead",
            ));
        }
        let external = self.launched.iter().any(|l| l == name);
        let mut invoke = false;
        let mut shutdown = false;
        if let Some(events) = request.get("events") {
            let Some(events) = events.as_array() else {
                return Err(forbidden(
                    "InvalidRequestFormat",
                    "events: expected an array of event types",
                ));
            };
            for event in events {
                match event.as_str() {
                    Some("INVOKE") => invoke = true,
                    Some("SHUTDOWN") if external => shutdown = true,
                    Some("SHUTDOWN") => {
                        return Err(forbidden(
                            "Extension.InvalidEventType",
                            "SHUTDOWN: ShutdownEventNotSupportedForInternalExtension",
                        ));
                    }
                    _ => {
                        return Err(forbidden(
                            "Extension.InvalidEventType",
                            format!("{event}: ErrorInvalidEventType"),
                        ));
                    }
                }
            }
        }
        if self.registered.iter().any(|e| e.name == name) {
            return Err(forbidden(
                "Extension.InvalidExtensionState",
                match external {
                    true => format!(
                        "State transition from Registered to Registered failed for extension {name}. Error: already registered"
                    ),
                    false => "Extension with this name already registered".to_owned(),
                },
            ));
        }
        if !external && self.registration_closed {
            return Err(forbidden(
                "Extension.RegistrationClosed",
                "Extension registration closed already",
            ));
        }
        if self.registered.len() >= MAX_EXTENSIONS {
            return Err(forbidden(
                "Extension.TooManyExtensions",
                format!("Extension limit ({MAX_EXTENSIONS}) reached"),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.registered.push(Extension {
            id: id.clone(),
            name: name.to_owned(),
            invoke,
            shutdown,
            state: State::Registered,
            parked: None,
            queued: VecDeque::new(),
        });
        let mut body = json!({
            "functionName": self.info.name,
            "functionVersion": self.info.version,
            "handler": self.info.handler,
        });
        let wants_account =
            accept_feature.is_some_and(|f| f.split(',').any(|f| f.trim() == "accountId"));
        if wants_account {
            body["accountId"] = self.info.account_id.clone().into();
        }
        Ok(Registered { id, body })
    }

    /// The registered extension `id` names, or the API's error for a missing, malformed or
    /// unknown identifier.
    fn find(&mut self, id: Option<&str>) -> Result<&mut Extension, ApiError> {
        let index = self.index(id)?;
        Ok(&mut self.registered[index])
    }

    /// Where the extension `id` names is in [`Extensions::registered`], or the API's error.
    fn index(&self, id: Option<&str>) -> Result<usize, ApiError> {
        let id = id.ok_or_else(|| {
            forbidden(
                "Extension.MissingExtensionIdentifier",
                "Missing Lambda-Extension-Identifier header",
            )
        })?;
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(forbidden(
                "Extension.InvalidExtensionIdentifier",
                "Invalid Lambda-Extension-Identifier",
            ));
        }
        self.registered
            .iter()
            .position(|e| e.id == id)
            .ok_or_else(|| {
                forbidden(
                    "Extension.UnknownExtensionIdentifier",
                    format!("Unknown extension {id}"),
                )
            })
    }

    /// The name of the registered extension `id` names (for the Telemetry and Logs APIs,
    /// which answer a missing or unknown identifier as this API does).
    pub fn name_of(&self, id: Option<&str>) -> Result<String, ApiError> {
        self.index(id).map(|i| self.registered[i].name.clone())
    }

    fn next(&mut self, id: Option<&str>, reply: Reply<ExtensionEvent>) -> bool {
        let extension = match self.find(id) {
            Ok(extension) => extension,
            Err(e) => {
                let _ = reply.send(Err(e));
                return false;
            }
        };
        if extension.state == State::Failed || extension.parked.is_some() {
            let from = match extension.state {
                State::Failed => "Failed",
                _ => "Ready",
            };
            let message = format!(
                "State transition from {from} to Ready failed for extension {}. Error: {}",
                extension.id,
                match extension.state {
                    State::Failed => "it reported an error",
                    _ => "a /next call is already waiting",
                }
            );
            let _ = reply.send(Err(forbidden("Extension.InvalidExtensionState", message)));
            return false;
        }
        match extension.queued.pop_front() {
            Some(event) => {
                let _ = reply.send(Ok(event));
                extension.state = State::Running;
                // It goes on at once with its next event: not ready.
                false
            }
            None => {
                extension.parked = Some(reply);
                extension.state = State::Ready;
                true
            }
        }
    }

    fn error(
        &mut self,
        kind: ErrorKind,
        id: Option<&str>,
        error_type: Option<String>,
    ) -> Result<(), ApiError> {
        let extension = self.find(id)?;
        let Some(error_type) = error_type else {
            return Err(forbidden(
                "Extension.MissingHeader",
                "Lambda-Extension-Function-Error-Type not found",
            ));
        };
        let allowed = match kind {
            ErrorKind::Init => extension.state == State::Registered,
            ErrorKind::Exit => extension.state != State::Failed,
        };
        if !allowed {
            return Err(forbidden(
                "Extension.InvalidExtensionState",
                format!(
                    "State transition from {:?} to {} failed for extension {}",
                    extension.state,
                    match kind {
                        ErrorKind::Init => "InitError",
                        ErrorKind::Exit => "ExitError",
                    },
                    extension.id
                ),
            ));
        }
        extension.state = State::Failed;
        let name = extension.name.clone();
        let (fatal, what) = match kind {
            ErrorKind::Init => ("Extension.InitError", "init/error"),
            ErrorKind::Exit => ("Extension.ExitError", "exit/error"),
        };
        self.set_fatal(
            fatal,
            format!("extension {name} reported {what}: {error_type}"),
        );
        Ok(())
    }

    /// The runtime has asked for its first event: internal extensions may no longer register.
    pub fn close_registration(&mut self) {
        self.registration_closed = true;
    }

    /// Whether init may end, as far as extensions go: every launched extension has registered
    /// and every registered one has called `/next`.
    pub fn init_done(&self) -> bool {
        self.all_registered() && self.registered.iter().all(|e| e.state == State::Ready)
    }

    /// Whether every launched external extension has registered: Lambda starts the runtime
    /// then.
    pub fn all_registered(&self) -> bool {
        self.launched
            .iter()
            .all(|l| self.registered.iter().any(|e| &e.name == l))
    }

    /// Hands an invocation to every extension registered for `INVOKE`. The event is built
    /// only when there is one: this runs at every invocation, and most functions have none.
    pub fn invoke(&mut self, event: impl FnOnce() -> ExtensionEvent) {
        let mut wanting = self.registered.iter_mut().filter(|e| e.invoke).peekable();
        if wanting.peek().is_none() {
            return;
        }
        let event = event();
        for extension in wanting {
            match extension.parked.take() {
                Some(reply) => {
                    let _ = reply.send(Ok(event.clone()));
                    extension.state = State::Running;
                }
                None => extension.queued.push_back(event.clone()),
            }
        }
    }

    /// Whether every extension registered for `INVOKE` is back at `/next` with nothing
    /// queued: the invocation is over for them.
    pub fn invoke_done(&self) -> bool {
        self.registered
            .iter()
            .filter(|e| e.invoke)
            .all(|e| e.state == State::Ready && e.queued.is_empty())
    }

    /// Sends `SHUTDOWN` to every extension registered for it; whether any was.
    pub fn shutdown(&mut self, reason: ShutdownReason, deadline_ms: u64) -> bool {
        let event = ExtensionEvent::Shutdown {
            reason,
            deadline_ms,
        };
        let mut any = false;
        for extension in self.registered.iter_mut().filter(|e| e.shutdown) {
            any = true;
            match extension.parked.take() {
                Some(reply) => {
                    let _ = reply.send(Ok(event.clone()));
                    extension.state = State::Running;
                }
                None => extension.queued.push_back(event.clone()),
            }
        }
        any
    }

    /// The launched external extensions that will not hear `SHUTDOWN`: not registered for it,
    /// or not registered at all. Lambda kills them at once when the environment shuts down.
    pub fn external_without_shutdown(&self) -> Vec<String> {
        self.launched
            .iter()
            .filter(|name| {
                !self
                    .registered
                    .iter()
                    .any(|e| e.name == **name && e.shutdown)
            })
            .cloned()
            .collect()
    }

    /// An external extension's process ended while the environment was not shutting down.
    pub fn crashed(&mut self, file_name: &str, status: &str) {
        self.set_fatal(
            "Extension.Crash",
            format!("extension {file_name} exited ({status})"),
        );
    }

    /// An external extension could not be started.
    pub fn launch_failed(&mut self, file_name: &str, reason: &str) {
        self.set_fatal(
            "Extension.LaunchError",
            format!("extension {file_name} could not be started: {reason}"),
        );
    }

    /// The environment is ending: every waiting `/next` is answered with Lambda's 500, which
    /// tells an extension to exit.
    pub fn close(&mut self) {
        for extension in &mut self.registered {
            if let Some(reply) = extension.parked.take() {
                let _ = reply.send(Err(ApiError::internal(
                    "Container error. Non-recoverable state. Extension should exit promptly.",
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> FunctionInfo {
        FunctionInfo {
            name: "f".into(),
            version: "$LATEST".into(),
            handler: "app.handler".into(),
            account_id: "000000000000".into(),
        }
    }

    fn register(
        ext: &mut Extensions,
        name: &str,
        body: &str,
        feature: Option<&str>,
    ) -> Result<Registered, ApiError> {
        let (reply, mut answer) = oneshot::channel();
        ext.on_call(ExtensionCall::Register {
            name: name.into(),
            accept_feature: feature.map(str::to_owned),
            body: Bytes::from(body.to_owned()),
            reply,
        });
        answer.try_recv().unwrap()
    }

    fn next(
        ext: &mut Extensions,
        id: Option<&str>,
    ) -> (bool, oneshot::Receiver<Result<ExtensionEvent, ApiError>>) {
        let (reply, answer) = oneshot::channel();
        let changed = ext.on_call(ExtensionCall::Next {
            id: id.map(str::to_owned),
            reply,
        });
        (changed, answer)
    }

    #[test]
    fn register_answers_the_functions_identity_and_account_on_request() {
        let mut ext = Extensions::new(info(), vec!["agent".into()]);
        let r = register(
            &mut ext,
            "agent",
            r#"{"events":["INVOKE","SHUTDOWN"]}"#,
            None,
        )
        .unwrap();
        assert!(uuid::Uuid::parse_str(&r.id).is_ok());
        assert_eq!(
            r.body,
            json!({"functionName": "f", "functionVersion": "$LATEST", "handler": "app.handler"})
        );
        let r = register(&mut ext, "internal", "{}", Some("accountId")).unwrap();
        assert_eq!(r.body["accountId"], "000000000000");
        assert_eq!(
            ext.summary(),
            vec![
                ("agent".to_owned(), vec!["INVOKE", "SHUTDOWN"]),
                ("internal".to_owned(), vec![])
            ]
        );
    }

    #[test]
    fn bad_registrations_get_lambdas_errors() {
        let mut ext = Extensions::new(info(), vec!["agent".into()]);
        let e = |r: Result<Registered, ApiError>| {
            let e = r.unwrap_err();
            assert_eq!(e.status, 403);
            (e.error_type, e.message)
        };
        assert_eq!(
            e(register(&mut ext, "", "{}", None)).0,
            "Extension.InvalidExtensionName"
        );
        assert_eq!(
            e(register(&mut ext, "agent", "", None)).0,
            "InvalidRequestFormat"
        );
        assert_eq!(
            e(register(
                &mut ext,
                "agent",
                r#"{"configurationKeys":[]}"#,
                None
            ))
            .0,
            "InvalidRequestFormat"
        );
        assert_eq!(
            e(register(
                &mut ext,
                "agent",
                r#"{"events":["RESTORE"]}"#,
                None
            )),
            (
                "Extension.InvalidEventType",
                "\"RESTORE\": ErrorInvalidEventType".to_owned()
            )
        );
        assert_eq!(
            e(register(
                &mut ext,
                "inside",
                r#"{"events":["SHUTDOWN"]}"#,
                None
            ))
            .1,
            "SHUTDOWN: ShutdownEventNotSupportedForInternalExtension"
        );
        register(&mut ext, "agent", "{}", None).unwrap();
        assert_eq!(
            e(register(&mut ext, "agent", "{}", None)).0,
            "Extension.InvalidExtensionState"
        );
        for i in 0..9 {
            register(&mut ext, &format!("internal-{i}"), "{}", None).unwrap();
        }
        assert_eq!(
            e(register(&mut ext, "eleventh", "{}", None)),
            (
                "Extension.TooManyExtensions",
                "Extension limit (10) reached".to_owned()
            )
        );
    }

    #[test]
    fn internal_registration_closes_with_the_runtimes_first_next() {
        let mut ext = Extensions::new(info(), vec!["late".into()]);
        ext.close_registration();
        let e = register(&mut ext, "internal", "{}", None).unwrap_err();
        assert_eq!(e.error_type, "Extension.RegistrationClosed");
        // A launched external extension may still register: init waits for it.
        assert!(!ext.init_done());
        register(&mut ext, "late", "{}", None).unwrap();
    }

    #[test]
    fn init_waits_for_every_launched_extension_to_register_and_call_next() {
        let mut ext = Extensions::new(info(), vec!["a".into(), "b".into()]);
        assert!(!ext.init_done());
        let a = register(&mut ext, "a", r#"{"events":["INVOKE"]}"#, None).unwrap();
        let b = register(&mut ext, "b", r#"{"events":["SHUTDOWN"]}"#, None).unwrap();
        assert!(!ext.init_done());
        let (changed, _a_next) = next(&mut ext, Some(&a.id));
        assert!(changed);
        assert!(!ext.init_done());
        let (_, _b_next) = next(&mut ext, Some(&b.id));
        assert!(ext.init_done());
    }

    #[test]
    fn invoke_goes_to_subscribers_and_waits_for_their_next() {
        let mut ext = Extensions::new(info(), vec!["a".into(), "b".into()]);
        let a = register(&mut ext, "a", r#"{"events":["INVOKE","SHUTDOWN"]}"#, None).unwrap();
        let b = register(&mut ext, "b", r#"{"events":["SHUTDOWN"]}"#, None).unwrap();
        let (_, mut a_next) = next(&mut ext, Some(&a.id));
        let (_, mut b_next) = next(&mut ext, Some(&b.id));
        let event = ExtensionEvent::Invoke {
            request_id: "r1".into(),
            deadline_ms: 5,
            function_arn: "arn".into(),
            trace_id: Some("Root=1".into()),
        };
        ext.invoke(|| event.clone());
        assert_eq!(a_next.try_recv().unwrap().unwrap(), event);
        assert!(b_next.try_recv().is_err(), "b did not ask for INVOKE");
        assert!(!ext.invoke_done());
        let (changed, _a_next) = next(&mut ext, Some(&a.id));
        assert!(changed);
        assert!(ext.invoke_done());
        assert_eq!(
            event.body(),
            json!({"eventType": "INVOKE", "deadlineMs": 5, "requestId": "r1",
                   "invokedFunctionArn": "arn",
                   "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1"}})
        );
    }

    #[test]
    fn an_event_that_arrives_before_next_is_queued_for_it() {
        let mut ext = Extensions::new(info(), vec!["a".into()]);
        let a = register(&mut ext, "a", r#"{"events":["INVOKE"]}"#, None).unwrap();
        let event = ExtensionEvent::Invoke {
            request_id: "r1".into(),
            deadline_ms: 5,
            function_arn: "arn".into(),
            trace_id: None,
        };
        ext.invoke(|| event.clone());
        assert!(!ext.invoke_done());
        let (changed, mut answer) = next(&mut ext, Some(&a.id));
        assert!(!changed);
        assert_eq!(answer.try_recv().unwrap().unwrap(), event);
        assert!(!ext.invoke_done());
        let _ = next(&mut ext, Some(&a.id));
        assert!(ext.invoke_done());
    }

    #[test]
    fn the_extensions_that_will_not_hear_shutdown_are_those_not_registered_for_it() {
        let mut ext = Extensions::new(info(), vec!["a".into(), "b".into(), "c".into()]);
        register(&mut ext, "a", r#"{"events":["INVOKE","SHUTDOWN"]}"#, None).unwrap();
        register(&mut ext, "b", r#"{"events":["INVOKE"]}"#, None).unwrap();
        // `c` never registered; an internal extension is the runtime's, killed with it.
        register(&mut ext, "internal", r#"{"events":["INVOKE"]}"#, None).unwrap();
        assert_eq!(ext.external_without_shutdown(), ["b", "c"]);
    }

    #[test]
    fn shutdown_reaches_its_subscribers_with_the_reason_in_lowercase() {
        let mut ext = Extensions::new(info(), vec!["a".into()]);
        let a = register(&mut ext, "a", r#"{"events":["SHUTDOWN"]}"#, None).unwrap();
        let (_, mut a_next) = next(&mut ext, Some(&a.id));
        assert!(ext.shutdown(ShutdownReason::Timeout, 9));
        let event = a_next.try_recv().unwrap().unwrap();
        assert_eq!(
            event.body(),
            json!({"eventType": "SHUTDOWN", "deadlineMs": 9, "shutdownReason": "timeout"})
        );
    }

    #[test]
    fn identifiers_are_checked_and_errors_are_fatal_once() {
        let mut ext = Extensions::new(info(), vec!["a".into()]);
        let a = register(&mut ext, "a", "{}", None).unwrap();
        let err = |answer: &mut oneshot::Receiver<Result<ExtensionEvent, ApiError>>| {
            answer.try_recv().unwrap().unwrap_err().error_type
        };
        assert_eq!(
            err(&mut next(&mut ext, None).1),
            "Extension.MissingExtensionIdentifier"
        );
        assert_eq!(
            err(&mut next(&mut ext, Some("nope")).1),
            "Extension.InvalidExtensionIdentifier"
        );
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_eq!(
            err(&mut next(&mut ext, Some(&unknown)).1),
            "Extension.UnknownExtensionIdentifier"
        );
        // The Telemetry and Logs APIs learn the name, or the same errors.
        assert_eq!(ext.name_of(Some(&a.id)).unwrap(), "a");
        assert_eq!(
            ext.name_of(None).unwrap_err().error_type,
            "Extension.MissingExtensionIdentifier"
        );
        assert_eq!(
            ext.name_of(Some(&unknown)).unwrap_err().error_type,
            "Extension.UnknownExtensionIdentifier"
        );
        let error = |ext: &mut Extensions, kind, id: &str, ty: Option<&str>| {
            let (reply, mut answer) = oneshot::channel();
            ext.on_call(ExtensionCall::Error {
                kind,
                id: Some(id.to_owned()),
                error_type: ty.map(str::to_owned),
                reply,
            });
            answer.try_recv().unwrap()
        };
        assert_eq!(
            error(&mut ext, ErrorKind::Init, &a.id, None)
                .unwrap_err()
                .error_type,
            "Extension.MissingHeader"
        );
        error(
            &mut ext,
            ErrorKind::Init,
            &a.id,
            Some("Extension.ConfigInvalid"),
        )
        .unwrap();
        assert_eq!(ext.fatal().unwrap().error_type, "Extension.InitError");
        assert!(
            ext.fatal()
                .unwrap()
                .message
                .contains("Extension.ConfigInvalid")
        );
        // Nothing more from it; the first fatal error stays.
        assert_eq!(
            error(&mut ext, ErrorKind::Exit, &a.id, Some("X"))
                .unwrap_err()
                .error_type,
            "Extension.InvalidExtensionState"
        );
        ext.crashed("a", "exit status 1");
        assert_eq!(ext.fatal().unwrap().error_type, "Extension.InitError");
    }
}
