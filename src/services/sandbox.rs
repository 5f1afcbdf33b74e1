//! `imprint.v2.SandboxService` → `/v2/simulate_*`.

use crate::pb::imprint::v2::{sandbox_service_server::SandboxService, *};

super::rpcs! {
    service SandboxService(SandboxService) {
        SimulateTransactionEvent(simulate_transaction_event): SimulateTransactionEventRequest => TransactionEvent, json_body,
            POST "/v2/simulate_transaction_event",
            query [], required ["payment_method_id", "status"], body_only [];
        SimulateStatementReward(simulate_statement_reward): SimulateStatementRewardRequest => SimulateStatementRewardResponse, json_body,
            POST "/v2/simulate_statement_reward",
            query [], required ["customer_id"], body_only [];
        SimulateReward(simulate_reward): SimulateRewardRequest => SimulateRewardResponse, json_body,
            POST "/v2/simulate_reward",
            query [], required ["customer_id", "reward_type"], body_only [];
    }
}
