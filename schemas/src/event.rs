//! The typed-event contract ([`Event`]) and the Rust types of the reference order domain.
//!
//! A type implements [`Event`] to be published and consumed through the bus: its Avro full name
//! (also its CloudEvents `ce_type`), its topic, the Avro schema it is written with, and where its
//! correlation id lives. The field names of a type match its `.avsc` file; a test round-trips
//! every type through its schema.

use apache_avro::Schema;

use crate::binary::{Coder, SpecificWriter};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A versioned domain event that travels through the bus.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Avro full name, e.g. `io.choreo.orders.OrderPlaced`; also the CloudEvents `ce_type`.
    const TYPE: &'static str;
    /// The topic this event travels on.
    const TOPIC: &'static str;
    /// The Avro schema this type writes with (and reads into, by schema resolution).
    fn schema() -> &'static Schema;
    /// The schema as JSON text, as registered with the registry.
    fn schema_text() -> &'static str;
    /// The correlation id: the record key, e.g. the order id.
    fn correlation_id(&self) -> &str;
    /// The type's specific coder ([`crate::binary::specific`]): code made for the type, used by
    /// the bus in place of its general codec for every writer schema the coder can plan.
    /// `None` (the default): the general codec only.
    const SPECIFIC: Option<Coder<Self>> = None;
    /// [`Event::SPECIFIC`] checked, once per type, to write the type's own schema: what
    /// publishing writes with. `None`: the type has no specific coder, or it does not write the
    /// schema (logged once).
    fn specific_writer() -> Option<&'static SpecificWriter<Self>> {
        None
    }
}

/// Implements [`Event`] for a type backed by an `.avsc` text.
///
/// ```text
/// choreo_schemas::avro_event!(MyEvent, "com.acme.MyEvent", "my-topic",
///     include_str!("my_event.avsc"), |e| &e.order_id);
/// ```
///
/// With `specific` first, the type also has its specific coder ([`Event::SPECIFIC`]), which
/// [`specific_record!`](crate::specific_record) implements:
///
/// ```text
/// choreo_schemas::specific_record!(MyEvent { order_id: String, amount: i64 });
/// choreo_schemas::avro_event!(specific MyEvent, "com.acme.MyEvent", "my-topic",
///     include_str!("my_event.avsc"), |e| &e.order_id);
/// ```
#[macro_export]
macro_rules! avro_event {
    (specific $ty:ty, $name:expr, $topic:expr, $text:expr, |$e:ident| $key:expr) => {
        $crate::avro_event!(@impl $ty, $name, $topic, $text, |$e| $key,
            const SPECIFIC: ::std::option::Option<$crate::binary::Coder<Self>> =
                ::std::option::Option::Some($crate::binary::Coder::of());
            fn specific_writer(
            ) -> ::std::option::Option<&'static $crate::binary::SpecificWriter<Self>> {
                static WRITER: ::std::sync::OnceLock<
                    ::std::option::Option<$crate::binary::SpecificWriter<$ty>>,
                > = ::std::sync::OnceLock::new();
                WRITER
                    .get_or_init(|| {
                        $crate::binary::SpecificWriter::checked(
                            $crate::binary::Coder::of(),
                            <$ty as $crate::Event>::schema(),
                            <$ty as $crate::Event>::TYPE,
                        )
                    })
                    .as_ref()
            });
    };
    ($ty:ty, $name:expr, $topic:expr, $text:expr, |$e:ident| $key:expr) => {
        $crate::avro_event!(@impl $ty, $name, $topic, $text, |$e| $key,);
    };
    (@impl $ty:ty, $name:expr, $topic:expr, $text:expr, |$e:ident| $key:expr, $($specific:tt)*) => {
        impl $crate::Event for $ty {
            $($specific)*
            const TYPE: &'static str = $name;
            const TOPIC: &'static str = $topic;
            fn schema() -> &'static $crate::apache_avro::Schema {
                static SCHEMA: ::std::sync::OnceLock<$crate::apache_avro::Schema> =
                    ::std::sync::OnceLock::new();
                SCHEMA.get_or_init(|| {
                    $crate::apache_avro::Schema::parse_str(<$ty as $crate::Event>::schema_text())
                        .expect("the schema of an event type is valid Avro")
                })
            }
            fn schema_text() -> &'static str {
                $text
            }
            fn correlation_id(&self) -> &str {
                let $e = self;
                $key
            }
        }
    };
}

/// An amount in minor units of an ISO-4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Amount in the currency's minor unit (cents).
    pub amount_minor: i64,
    /// ISO-4217 code.
    pub currency: String,
}

crate::specific_record!(Money {
    amount_minor: i64,
    currency: String
});

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    /// Stock keeping unit.
    pub sku: String,
    /// How many.
    pub quantity: i32,
    /// Price of one.
    pub unit_price: Money,
}

crate::specific_record!(LineItem {
    sku: String,
    quantity: i32,
    unit_price: Money
});

/// A reserved quantity of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedItem {
    /// Stock keeping unit.
    pub sku: String,
    /// How many.
    pub quantity: i32,
}

crate::specific_record!(ReservedItem {
    sku: String,
    quantity: i32
});

macro_rules! order_event {
    ($(#[$m:meta])* $ty:ident, $topic:literal, $file:literal { $($body:tt)* }) => {
        order_event!($(#[$m])* $ty as $ty, $topic, $file { $($body)* });
    };
    ($(#[$m:meta])* $ty:ident as $name:ident, $topic:literal, $file:literal { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $ty {
            $($(#[$fm])* pub $f: $t,)*
        }
        $crate::specific_record!($ty { $($f: $t),* });
        avro_event!(specific $ty, concat!("io.choreo.orders.", stringify!($name)), $topic,
            include_str!(concat!("../avro/", $file)), |e| &e.order_id);
    };
}

order_event!(
    /// A customer placed an order; starts the order saga (schema v2).
    OrderPlaced, "orders", "order_placed.v2.avsc" {
    /// The order (correlation id).
    order_id: String, customer_id: String, items: Vec<LineItem>, total: Money,
    shipping_address: String,
    /// Sales channel (added in v2, default "web").
    channel: String,
});
order_event!(
    /// Version 1 of [`OrderPlaced`], as older producers still write it.
    OrderPlacedV1 as OrderPlaced, "orders", "order_placed.v1.avsc" {
    /// The order (correlation id).
    order_id: String, customer_id: String, items: Vec<LineItem>, total: Money,
    shipping_address: String,
});
order_event!(
    /// The payment service authorized the order's amount.
    PaymentAuthorized, "payments", "payment_authorized.v1.avsc" {
    /// The order.
    order_id: String, payment_id: String, amount: Money });
order_event!(
    /// The payment service declined the payment.
    PaymentDeclined, "payments", "payment_declined.v1.avsc" {
    /// The order.
    order_id: String, reason: String });
order_event!(
    /// Compensation: refund an authorized payment.
    RefundPayment, "payments", "refund_payment.v1.avsc" {
    /// The order.
    order_id: String, payment_id: String, amount: Money, reason: String });
order_event!(
    /// A refund was made (acknowledges [`RefundPayment`]).
    PaymentRefunded, "payments", "payment_refunded.v1.avsc" {
    /// The order.
    order_id: String, payment_id: String });
order_event!(
    /// The inventory service reserved every line item.
    InventoryReserved, "inventory", "inventory_reserved.v1.avsc" {
    /// The order.
    order_id: String, reservation_id: String, items: Vec<ReservedItem> });
order_event!(
    /// The inventory service could not reserve the items.
    InventoryUnavailable, "inventory", "inventory_unavailable.v1.avsc" {
    /// The order.
    order_id: String, reason: String, missing_skus: Vec<String> });
order_event!(
    /// Compensation: release a stock reservation.
    ReleaseInventory, "inventory", "release_inventory.v1.avsc" {
    /// The order.
    order_id: String, reservation_id: String, reason: String });
order_event!(
    /// A reservation was released (acknowledges [`ReleaseInventory`]).
    InventoryReleased, "inventory", "inventory_released.v1.avsc" {
    /// The order.
    order_id: String, reservation_id: String });
order_event!(
    /// The saga asks the shipping service to schedule a shipment.
    ShipmentRequested, "shipping", "shipment_requested.v1.avsc" {
    /// The order.
    order_id: String, shipping_address: String });
order_event!(
    /// A shipment was scheduled.
    ShipmentScheduled, "shipping", "shipment_scheduled.v1.avsc" {
    /// The order.
    order_id: String, shipment_id: String, carrier: String,
    /// Estimated delivery, milliseconds since the Unix epoch.
    estimated_delivery_ms: i64 });
order_event!(
    /// No shipment could be scheduled.
    ShipmentFailed, "shipping", "shipment_failed.v1.avsc" {
    /// The order.
    order_id: String, reason: String });
order_event!(
    /// Compensation: cancel a scheduled shipment.
    CancelShipment, "shipping", "cancel_shipment.v1.avsc" {
    /// The order.
    order_id: String, shipment_id: String, reason: String });
order_event!(
    /// A shipment was cancelled (acknowledges [`CancelShipment`]).
    ShipmentCancelled, "shipping", "shipment_cancelled.v1.avsc" {
    /// The order.
    order_id: String, shipment_id: String });
order_event!(
    /// Every step of the order saga succeeded.
    OrderConfirmed, "orders", "order_confirmed.v1.avsc" {
    /// The order.
    order_id: String, payment_id: String, reservation_id: String, shipment_id: String });
order_event!(
    /// The order saga gave up; what had completed was compensated.
    OrderCancelled, "orders", "order_cancelled.v1.avsc" {
    /// The order.
    order_id: String, reason: String });
