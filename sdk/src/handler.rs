//! Calling the handler for one event, whichever transport brought it: the payload
//! deserialised, the handler called with a panic caught, the response serialised. Every
//! way this can go wrong ends as a [`Diagnostic`], so each event gets exactly one answer.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::{Service, ServiceExt};

use crate::{Context, Diagnostic, LambdaEvent};

/// What a transport calls for each event.
pub(crate) trait Invoke {
    /// The response body, or the error to report.
    fn invoke(
        &mut self,
        payload: &[u8],
        context: Context,
    ) -> impl Future<Output = Result<Vec<u8>, Diagnostic>>;
}

/// A service taking `LambdaEvent<A>` and answering with something serialisable.
pub(crate) struct Typed<S, A> {
    service: S,
    event: PhantomData<fn(A)>,
}

impl<S, A> Typed<S, A> {
    pub(crate) fn new(service: S) -> Typed<S, A> {
        Typed {
            service,
            event: PhantomData,
        }
    }
}

impl<S, A> Invoke for Typed<S, A>
where
    S: Service<LambdaEvent<A>>,
    S::Response: Serialize,
    S::Error: Into<Diagnostic>,
    A: DeserializeOwned,
{
    async fn invoke(&mut self, payload: &[u8], context: Context) -> Result<Vec<u8>, Diagnostic> {
        let payload: A = serde_json::from_slice(payload).map_err(|e| {
            Diagnostic::new(
                "Runtime.UnmarshalError",
                format!(
                    "the event is not a {}: {e}",
                    short_type_name(std::any::type_name::<A>())
                ),
            )
        })?;
        let response = call(&mut self.service, LambdaEvent { payload, context }).await?;
        serde_json::to_vec(&response).map_err(|e| {
            Diagnostic::new(
                "Runtime.MarshalError",
                format!("the handler's response cannot be serialised: {e}"),
            )
        })
    }
}

/// Calls a service once it is ready; a panic, in the call or in the future it returns, is
/// caught and reported as a `Panic` error (the panic hook has already logged it).
pub(crate) async fn call<S, R>(service: &mut S, request: R) -> Result<S::Response, Diagnostic>
where
    S: Service<R>,
    S::Error: Into<Diagnostic>,
{
    let ready = AssertUnwindSafe(service.ready()).catch_unwind().await;
    let service = match ready {
        Ok(Ok(service)) => service,
        Ok(Err(e)) => return Err(e.into()),
        Err(panic) => return Err(panicked(&*panic)),
    };
    let future = std::panic::catch_unwind(AssertUnwindSafe(|| service.call(request)))
        .map_err(|panic| panicked(&*panic))?;
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result.map_err(Into::into),
        Err(panic) => Err(panicked(&*panic)),
    }
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> Diagnostic {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    Diagnostic::new("Panic", format!("the handler panicked: {message}"))
}

/// `alloc::vec::Vec<my::Event>` → `Vec<Event>`: the type as its author wrote it.
fn short_type_name(name: &str) -> String {
    let mut out = String::new();
    let mut segment = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or_default());
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_fn;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(
            short_type_name("alloc::vec::Vec<my_crate::Event>"),
            "Vec<Event>"
        );
        assert_eq!(short_type_name("u32"), "u32");
    }

    #[tokio::test]
    async fn bad_events_errors_and_panics_each_end_as_one_diagnostic() {
        let mut typed = Typed::new(service_fn(|event: LambdaEvent<u32>| async move {
            match event.payload {
                0 => Err(crate::Error::from("zero")),
                1 => panic!("one is right out"),
                n => Ok(n * 2),
            }
        }));
        let context = Context::default();
        assert_eq!(typed.invoke(b"21", context.clone()).await.unwrap(), b"42");
        let bad = typed.invoke(b"\"x\"", context.clone()).await.unwrap_err();
        assert_eq!(bad.error_type, "Runtime.UnmarshalError");
        assert!(bad.error_message.contains("not a u32"), "{bad:?}");
        let err = typed.invoke(b"0", context.clone()).await.unwrap_err();
        assert_eq!(
            (err.error_type.as_str(), err.error_message.as_str()),
            ("Error", "zero")
        );
        let panic = typed.invoke(b"1", context.clone()).await.unwrap_err();
        assert_eq!(panic.error_type, "Panic");
        assert!(
            panic.error_message.contains("one is right out"),
            "{panic:?}"
        );
        // The handler keeps serving after a panic.
        assert_eq!(typed.invoke(b"2", context).await.unwrap(), b"4");
    }
}
