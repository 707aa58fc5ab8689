//! The in-cluster controller, compatible with Yoke's ATC: Airways, Flights and ClusterFlights
//! become releases; admission and conversion webhooks over TLS.
#![warn(missing_docs)]
