//! extension-next-rs: the least an external extension on the official `lambda-extension` crate
//! does: it registers for `INVOKE` and `SHUTDOWN` and calls `/next` again at once after each
//! event, printing nothing. The extensions benchmark measures what such an extension adds to a
//! warm invocation (lamina waits for its `/next` before the environment takes the next one).

use lambda_extension::{Error, Extension, LambdaEvent, NextEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    Extension::new()
        .with_events(&["INVOKE", "SHUTDOWN"])
        .with_events_processor(service_fn(|event: LambdaEvent| async move {
            if let NextEvent::Shutdown(_) = event.next {
                // Exit rather than ask for another event: the shutdown is over for it.
                std::process::exit(0);
            }
            Ok::<(), Error>(())
        }))
        .run()
        .await
}
