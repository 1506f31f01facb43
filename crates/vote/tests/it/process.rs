//! The `gatehouse vote` process: flags, Cloud SQL credentials, SIGTERM and SIGKILL.
