//! Write ACLs on an output topic, on the project's own Apache Kafka (which has the SASL
//! principal that `TestBroker::deny_writes` restricts): a batch that cannot write there is
//! aborted and retried, nothing of it visible; the state never runs ahead of the events it
//! records; and once the ACL is lifted the sagas carry on.

use std::time::Duration;

use choreo_bus::Subscription;
use choreo_integration_tests::process::{Replica, ReplicaConfig};
use choreo_integration_tests::saga_scenarios::{Collector, Path, start_services};
use choreo_integration_tests::world::{World, drive};

/// A replica whose principal an ACL denies writes to `shipping`, and a happy order it has
/// taken: the batch that emits its ShipmentRequested has been refused by the ACL (and is being
/// retried) when this returns.
struct Refused {
    world: World,
    cfg: ReplicaConfig,
    services: Subscription,
    collector: Collector,
    replica: Replica,
    order: String,
}

async fn a_happy_order_refused_by_the_shipping_acl(name: &str) -> Refused {
    let world = World::own_apache_kafka().await;
    let settings = world
        .broker
        .deny_writes("shipping")
        .await
        .expect("a principal denied the shipping topic");
    // Effectively-once: an exactly-once replica first sweeps every output partition for
    // transactions a predecessor left open, which a denied topic refuses at start-up. Step
    // deadlines (2 min) far beyond the tests' patience: only the command can finish the order.
    let mut cfg = world.replica_config("effectively_once", 120);
    cfg.use_client_settings(&settings);
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let mut replica = Replica::start(&cfg, &format!("{name}-0"))
        .await
        .expect("replica");
    replica
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("ready");
    let order = format!("happy-{name}-1");
    drive(bus.clone(), vec![(order.clone(), Path::Happy)], 0)
        .await
        .expect("published");
    let started = std::time::Instant::now();
    while !replica
        .log_text()
        .lines()
        .any(|l| l.contains("batch aborted") && l.contains("TopicAuthorizationFailed"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no batch refused by the ACL; log:\n{}",
            replica.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Refused {
        world,
        cfg,
        services,
        collector,
        replica,
        order,
    }
}

/// A write ACL lifted while the replica runs: the batches refused by it were aborted and
/// retried, and once writes to `shipping` are allowed again the same replica (no restart) sends
/// the command and the saga completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_acl_lifted_while_running_lets_the_same_replica_carry_the_saga_on() {
    let Refused {
        world,
        services,
        collector,
        mut replica,
        order,
        ..
    } = a_happy_order_refused_by_the_shipping_acl("lifted").await;
    assert!(
        collector
            .by_order()
            .get(&order)
            .is_none_or(|e| !e.iter().any(|t| t == "ShipmentRequested")),
        "nothing of a refused batch is visible"
    );
    world
        .broker
        .allow_writes("shipping")
        .await
        .expect("ACL lifted");
    collector
        .wait_terminal(std::slice::from_ref(&order), Duration::from_secs(90))
        .await
        .expect("the same replica sends the command once writes are allowed");
    assert!(replica.is_running(), "the replica never stopped");
    let emitted = collector.by_order().remove(&order).unwrap_or_default();
    assert_eq!(
        emitted.iter().filter(|e| *e == "ShipmentRequested").count(),
        1,
        "the command once: {emitted:?}"
    );
    assert!(emitted.iter().any(|e| e == "OrderConfirmed"), "{emitted:?}");
    replica.stop().await.expect("clean stop");
    services.shutdown().await.expect("services stop");
}

/// Effectively-once records an emitted event in a saga's state only once the event is durable.
/// An ACL denies the replica's principal writes to `shipping`, so a happy order's
/// ShipmentRequested fails while every other topic, the changelog included, takes records; the
/// replica is SIGKILLed in that state, the ACL lifted, and the restarted replica must send the
/// command. (Had the changelog taken the state first, the restart would restore a saga that
/// believes the command sent and drop the replayed InventoryReserved as already seen: the order
/// would sit until its shipping deadline, then be compensated.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn effectively_once_writes_no_state_before_the_events_it_records_are_durable() {
    let Refused {
        world,
        cfg,
        services,
        collector,
        replica,
        order,
    } = a_happy_order_refused_by_the_shipping_acl("denied").await;
    replica.kill().await.expect("SIGKILL");
    world
        .broker
        .allow_writes("shipping")
        .await
        .expect("ACL lifted");
    let replica = Replica::start(&cfg, "denied-0").await.expect("restart");
    collector
        .wait_terminal(std::slice::from_ref(&order), Duration::from_secs(60))
        .await
        .expect("the restarted replica sends the command the first one could not");
    let emitted = collector.by_order().remove(&order).unwrap_or_default();
    assert!(
        emitted.iter().any(|e| e == "ShipmentRequested")
            && emitted.iter().any(|e| e == "OrderConfirmed"),
        "{emitted:?}"
    );
    replica.stop().await.expect("clean stop");
    services.shutdown().await.expect("services stop");
}
