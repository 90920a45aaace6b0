//! The channel a consumer's handlers publish on (and its failed messages are copied on):
//! apart from the channel it consumes on, so that a publish the broker answers with a
//! channel error (404 for a missing exchange) fails that publish only. The channel is opened
//! again, in confirm mode, for the next publish.

use std::fmt;
use std::sync::Arc;

use amqp_client::{BasicProperties, Channel, Connection};
use bytes::Bytes;
use tokio::sync::Mutex;

use crate::common::{PublishFailure, publish_confirmed};

/// A confirm-mode channel of its own, opened on first use and after an error.
#[derive(Clone)]
pub(crate) struct Publisher {
    conn: Connection,
    channel: Arc<Mutex<Option<Channel>>>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(conn: &Connection) -> Self {
        Self {
            conn: conn.clone(),
            channel: Arc::new(Mutex::new(None)),
        }
    }

    /// The open channel, opened now if there is none or the last one was closed.
    pub(crate) async fn channel(&self) -> Result<Channel, amqp_client::Error> {
        let mut slot = self.channel.lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(channel.clone());
        }
        let channel = self.conn.open_channel().await?;
        channel.confirm_select().await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes and waits for the broker's confirm.
    pub(crate) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        properties: BasicProperties,
        body: Bytes,
    ) -> Result<(), PublishFailure> {
        let channel = self.channel().await?;
        publish_confirmed(&channel, exchange, routing_key, mandatory, properties, body).await
    }

    /// Closes the channel, if one is open.
    pub(crate) async fn close(&self) {
        if let Some(channel) = self.channel.lock().await.take() {
            if let Err(e) = channel.close().await {
                tracing::debug!(error = %e, "closing the publishing channel");
            }
        }
    }
}
