//! PostgreSQL for real (skipped only when GATEHOUSE_TEST_POSTGRES is unset and
//! GATEHOUSE_TEST_REQUIRE does not list postgres).
