//! `imprint.v2.TransactionService` → `/v2/transactions`.

use crate::pb::imprint::v2::{transaction_service_server::TransactionService, *};

super::rpcs! {
    service TransactionService(TransactionService) {
        GetTransaction(get_transaction): GetTransactionRequest => Transaction, json_body,
            GET "/v2/transactions/{transaction_id}",
            query [], required ["transaction_id"], body_only [];
    }
}
