#include "server/sse_client.h"

#include <httplib.h>

namespace bitnet::server {

SseResult post_sse(const std::string& host, int port, const std::string& path,
                   const std::string& json_body,
                   const std::function<bool(const std::string&)>& on_data, int timeout_seconds,
                   const std::string& api_key) {
  httplib::Client client(host, port);
  client.set_connection_timeout(timeout_seconds);
  client.set_read_timeout(timeout_seconds);
  client.set_write_timeout(timeout_seconds);
  SseResult result;
  std::string pending;  // bytes of an event not yet terminated by a blank line
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
  if (!api_key.empty()) req.headers.emplace("Authorization", "Bearer " + api_key);
  req.body = json_body;
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    result.body.append(data, size);
    pending.append(data, size);
    for (size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      // One "data:" line per event is all this server sends; other lines are comments.
      size_t line_start = 0;
      while (line_start < event.size()) {
        size_t line_end = event.find('\n', line_start);
        if (line_end == std::string::npos) line_end = event.size();
        const std::string line = event.substr(line_start, line_end - line_start);
        if (line.rfind("data:", 0) == 0) {
          const size_t value_start = line.size() > 5 && line[5] == ' ' ? 6 : 5;
          if (!on_data(line.substr(value_start))) {
            result.aborted = true;
            return false;
          }
        }
        line_start = line_end + 1;
      }
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const bool ok = client.send(req, res, error);
  if (ok || res.status > 0) {
    result.status = res.status;
    for (const auto& [key, value] : res.headers) result.headers[key] = value;
  }
  if (!ok && !result.aborted) result.error = httplib::to_string(error);
  return result;
}

}  // namespace bitnet::server
