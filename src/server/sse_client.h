#pragma once
// A small client for server-sent events over HTTP POST (the load generator and the tests).

#include <functional>
#include <map>
#include <string>

namespace bitnet::server {

struct SseResult {
  int status = 0;     // 0 when no response arrived
  std::string error;  // transport failure, empty otherwise
  std::string body;   // the raw body (all events)
  std::map<std::string, std::string> headers;
  bool aborted = false;  // on_data returned false
};

// POSTs a JSON body to http://host:port/path and calls on_data with each event's data field
// ("[DONE]" included) as it arrives; returning false closes the connection at once.
SseResult post_sse(const std::string& host, int port, const std::string& path,
                   const std::string& json_body,
                   const std::function<bool(const std::string&)>& on_data, int timeout_seconds = 60,
                   const std::string& api_key = {});

}  // namespace bitnet::server
