// Chat templates: the Jinja templates instruct models ship with their
// vocabulary (tokenizer_config.json's `chat_template`, a `chat_template.jinja`
// file, GGUF's `tokenizer.chat_template`), rendered the way Hugging Face
// transformers renders them: jinja2 with trim_blocks and lstrip_blocks, the
// loop controls (break, continue), `raise_exception`, `strftime_now`, and a
// `tojson` that does not escape HTML. Loom implements the part of Jinja that
// chat templates use; docs/chat.md lists it. Anything else is refused when
// the template is parsed (an unknown tag, filter or test) or rendered (an
// unknown method), with the template's line.
//
// Templates are untrusted input: rendering is bounded (output size, macro
// depth, range sizes) and never crashes.
#ifndef LOOM_CHAT_TEMPLATE_H
#define LOOM_CHAT_TEMPLATE_H

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace loom {

struct ChatMessage {
  std::string role; // "system", "user", "assistant", ...
  std::string content;
};

// What a template sees besides the messages.
struct ChatInputs {
  // The vocabulary's BOS and EOS texts (empty where it has none).
  std::string bos_token;
  std::string eos_token;
  // End with the header of the assistant's turn (to generate a reply).
  bool add_generation_prompt = true;
};

class ChatTemplate {
public:
  // Parses `source`. Throws loom::Error ("chat template line L: ...") for a
  // syntax error or a tag, filter or test Loom does not implement.
  explicit ChatTemplate(std::string_view source);
  // The error parsing `source` gives, or "" when it parses (for callers
  // built without exceptions, like loomc).
  static std::string parseError(std::string_view source);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate &&) noexcept;
  ChatTemplate &operator=(ChatTemplate &&) noexcept;

  // Renders the conversation. Throws loom::Error naming the problem and the
  // template's line: the template's own raise_exception (e.g. "Conversation
  // roles must alternate user/assistant/user/assistant/..."), an undefined
  // value used, a type error.
  std::string render(const std::vector<ChatMessage> &messages,
                     const ChatInputs &inputs) const;

  // The same, from JSON text: either an array of messages (objects with
  // "role", "content" and any other fields the template reads, e.g.
  // "tool_calls"), or an object with a "messages" array whose other fields
  // are variables of the template ("tools", "documents", "date_string", ...;
  // "add_generation_prompt" there overrides inputs'). Throws loom::Error for
  // malformed JSON (with its offset) as for rendering.
  // `more` messages follow the JSON's (a conversation going on).
  std::string renderJson(std::string_view json, const ChatInputs &inputs,
                         const std::vector<ChatMessage> &more = {}) const;

  // The conversation `json` (as renderJson reads it; empty: none) with
  // `more` messages appended, as JSON text (json.dumps' form, indent 1),
  // for saving a conversation to continue later. Throws loom::Error for
  // malformed JSON.
  static std::string appendToJson(std::string_view json,
                                  const std::vector<ChatMessage> &more);
  // The role of the JSON conversation's last message ("" if it has none).
  static std::string lastRole(std::string_view json);

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace loom

#endif // LOOM_CHAT_TEMPLATE_H
