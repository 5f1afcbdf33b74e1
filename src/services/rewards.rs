//! `imprint.v2.RewardService` → `/v2/rewards`.

use crate::pb::imprint::v2::{reward_service_server::RewardService, *};

super::rpcs! {
    service RewardService(RewardService) {
        SearchRewards(search_rewards): SearchRewardsRequest => SearchRewardsResponse, json_body,
            GET "/v2/rewards",
            query ["transaction_event_id", "limit", "starting_after"], required [], body_only [];
        GetReward(get_reward): GetRewardRequest => Reward, json_body,
            GET "/v2/rewards/{reward_id}",
            query [], required ["reward_id"], body_only [];
        UpdateReward(update_reward): UpdateRewardRequest => Reward, json_body,
            PATCH "/v2/rewards/{reward_id}",
            query [], required ["reward_id"], body_only [];
    }
}
