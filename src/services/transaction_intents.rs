//! `imprint.v2.TransactionIntentService` → `/v2/transaction_intents`.

use crate::pb::imprint::v2::{transaction_intent_service_server::TransactionIntentService, *};

super::rpcs! {
    service TransactionIntentService(TransactionIntentService) {
        CreateTransactionIntent(create_transaction_intent): CreateTransactionIntentRequest => TransactionIntent, json_body,
            POST "/v2/transaction_intents",
            query [], required ["customer_id", "amount", "currency"], body_only [];
        ListTransactionIntents(list_transaction_intents): ListTransactionIntentsRequest => ListTransactionIntentsResponse, json_body,
            GET "/v2/transaction_intents",
            query ["type", "limit", "starting_after"], required [], body_only [];
        GetTransactionIntent(get_transaction_intent): GetTransactionIntentRequest => TransactionIntent, json_body,
            GET "/v2/transaction_intents/{intent_id}",
            query [], required ["intent_id"], body_only [];
        UpdateTransactionIntent(update_transaction_intent): UpdateTransactionIntentRequest => TransactionIntent, json_body,
            POST "/v2/transaction_intents/{intent_id}",
            query [], required ["intent_id", "customer_id", "amount", "status", "created_at"], body_only [];
    }
}
