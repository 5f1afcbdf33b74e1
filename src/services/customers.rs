//! `imprint.v2.CustomerService` → `/v2/customers...`.

use crate::pb::imprint::v2::{customer_service_server::CustomerService, *};

super::rpcs! {
    service CustomerService(CustomerService) {
        // SSN and date of birth force the POST form: they never go in a URL.
        SearchCustomers(search_customers): SearchCustomersRequest => SearchCustomersResponse, json_body,
            GET "/v2/customers",
            query ["partner_customer_id", "limit", "starting_after"], required [], body_only ["ssn", "date_of_birth"];
        GetCustomer(get_customer): GetCustomerRequest => Customer, json_body,
            GET "/v2/customers/{customer_id}",
            query [], required ["customer_id"], body_only [];
        UpdateCustomer(update_customer): UpdateCustomerRequest => Customer, json_body,
            POST "/v2/customers/{customer_id}",
            query [], required ["customer_id"], body_only [];
        GetRewardsBalance(get_rewards_balance): GetRewardsBalanceRequest => GetRewardsBalanceResponse, json_body,
            GET "/v2/customers/{customer_id}/rewards_balance",
            query [], required ["customer_id"], body_only [];
        ListCustomerPaymentMethods(list_customer_payment_methods): ListCustomerPaymentMethodsRequest => ListCustomerPaymentMethodsResponse, json_body,
            GET "/v2/customers/{customer_id}/payment_methods",
            query [], required ["customer_id"], body_only [];
        ListCustomerTransactionIntents(list_customer_transaction_intents): ListCustomerTransactionIntentsRequest => ListCustomerTransactionIntentsResponse, json_body,
            GET "/v2/customers/{customer_id}/transaction_intents",
            query [], required ["customer_id"], body_only [];
        ListCustomerTransactions(list_customer_transactions): ListCustomerTransactionsRequest => ListCustomerTransactionsResponse, json_body,
            GET "/v2/customers/{customer_id}/transactions",
            query ["limit", "starting_after"], required ["customer_id"], body_only [];
        ListCustomerRewards(list_customer_rewards): ListCustomerRewardsRequest => ListCustomerRewardsResponse, json_body,
            GET "/v2/customers/{customer_id}/rewards",
            query ["limit", "starting_after"], required ["customer_id"], body_only [];
    }
}
