//! High-availability runtime: heartbeat links, failover state machine, resources, monitors,
//! replication and load balancing. Built in the HA issue; nothing here yet.
