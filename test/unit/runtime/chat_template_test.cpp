// Chat-template engine tests that need no model: the inputs a template sees,
// errors that name the template's line, the bounds that keep an untrusted
// template from exhausting the machine, JSON input, and random mutations of
// real-world-shaped templates (each renders or throws loom::Error; none
// crashes or hangs). Rendering against jinja2 itself is
// test/tools/loom-run/chat.test.
#include "loom/chat_template.h"
#include "loom/error.h"
#include "support/shared.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace {

using loom::ChatInputs;
using loom::ChatMessage;
using loom::ChatTemplate;

std::string render(const std::string &source,
                   const std::vector<ChatMessage> &messages = {{"user", "hi"}},
                   ChatInputs inputs = {"<s>", "</s>", true}) {
  return ChatTemplate(source).render(messages, inputs);
}

// The message of the loom::Error `f` throws ("" if none).
template <typename F> std::string errorOf(F &&f) {
  try {
    f();
  } catch (const loom::Error &e) {
    return e.what();
  }
  return "";
}

TEST(ChatTemplate, SeesMessagesTokensAndGenerationPrompt) {
  const std::string t =
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m['content'] }}"
      "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant]"
      "{% endif %}";
  EXPECT_EQ(render(t, {{"system", "S"}, {"user", "U"}}),
            "<s>[system]S</s>[user]U</s>[assistant]");
  EXPECT_EQ(render(t, {{"user", "U"}}, {"<B>", "<E>", false}), "<B>[user]U<E>");
}

TEST(ChatTemplate, ErrorsNameTheLine) {
  EXPECT_EQ(errorOf([] { render("a\nb\n{% if x %}\n{{ y }"); }),
            "chat template line 4: unexpected '}'");
  EXPECT_EQ(errorOf([] { render("a\n{{ y"); }),
            "chat template line 2: unterminated '{{'");
  EXPECT_EQ(errorOf([] { render("{% for m in messages %}"); }),
            "chat template line 1: missing '{% endfor %}'");
  EXPECT_EQ(errorOf([] { render("\n\n{{ x | nope }}"); }),
            "chat template line 3: unknown filter 'nope'");
  EXPECT_EQ(errorOf([] { render("{% include 'x' %}"); }),
            "chat template line 1: unsupported tag 'include'");
  EXPECT_EQ(errorOf([] { render("\n{{ x is fancy }}"); }),
            "chat template line 2: unknown test 'fancy'");
  EXPECT_EQ(errorOf([] { render("{{ foo.bar }}"); }),
            "chat template line 1: 'foo' is undefined");
  EXPECT_EQ(errorOf([] { render("\n{{ 1 + 'a' }}"); }),
            "chat template line 2: unsupported operand types for +: 'int' "
            "and 'str'");
  EXPECT_EQ(errorOf([] { render("{{ raise_exception('no system role') }}"); }),
            "chat template line 1: the template refused the conversation: no "
            "system role");
  EXPECT_EQ(ChatTemplate::parseError("{% if %}"),
            "chat template line 1: expected an expression, found '%}'");
  EXPECT_EQ(ChatTemplate::parseError("{{ messages }}"), "");
}

TEST(ChatTemplate, BoundsWhatATemplateMayDo) {
  // Recursion, huge ranges, huge strings and outputs, deep nesting: each a
  // clear error, quickly.
  auto start = std::chrono::steady_clock::now();
  EXPECT_NE(errorOf([] {
              render("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}");
            }).find("macro calls nested too deeply"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              render("{{ range(1000000) | length }}");
            }).find("range() of over 100000 items"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              render("{{ 'x' * 100000000 }}");
            }).find("a value grows past 16 MiB"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              render("{% for i in range(100000) %}{{ 'y' * 1000 }}"
                     "{% endfor %}");
            }).find("the rendered prompt exceeds 16 MiB"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              render("{{ " + std::string(5000, '(') + "1" +
                     std::string(5000, ')') + " }}");
            }).find("nested too deeply"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              ChatTemplate("{{ messages }}")
                  .renderJson(std::string(5000, '[') + std::string(5000, ']'),
                              {});
            }).find("nested too deeply"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              render("{{ 9223372036854775807 + 1 }}");
            }).find("integer overflow"),
            std::string::npos);
  EXPECT_LT(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count(),
      10.0);
}

// Cases an ASan/UBSan fuzzer found (each once a crash, undefined
// behaviour, an escaping std:: exception, a hang or a memory blow-up): now
// Python's answer or a loom::Error.
TEST(ChatTemplate, FuzzerFindingsStayFixed) {
  const std::string minInt = "(-9223372036854775807 - 1)";
  EXPECT_EQ(render("{{ -" + minInt + " }}"), "9223372036854775808");
  EXPECT_EQ(render("{{ " + minInt + " is divisibleby(-1) }}"), "True");
  EXPECT_EQ(render("{{ 'abc'[1::9223372036854775807] }}"), "b");
  EXPECT_EQ(render("{{ [1, 2, 3][::-9223372036854775807 - 1] }}"), "[3]");
  EXPECT_EQ(render("{{ range(9223372036854775800, 9223372036854775807, 5) "
                   "| list }}"),
            "[9223372036854775800, 9223372036854775805]");
  EXPECT_EQ(render("{{ 1 ** 9223372036854775807 }} {{ 0 ** 4000000000000 }} "
                   "{{ (-1) ** 9223372036854775807 }} {{ 3 ** 39 }}"),
            "1 0 -1 4052555153018976267");
  EXPECT_NE(errorOf([] { render("{{ 3 ** 40 }}"); }).find("integer overflow"),
            std::string::npos);
  EXPECT_EQ(render("{{ '' * 9223372036854775807 }}|{{ ([] * "
                   "9223372036854775807) | length }}"),
            "|0");
  EXPECT_EQ(render("{{ 1e300 | int }}").size(), 301u);
  EXPECT_EQ(render("{{ '00123456789012345678901234' | int }}"),
            "123456789012345678901234");
  EXPECT_EQ(render("{{ 'a,b,c'.split(',', 9223372036854775807) }}"),
            "['a', 'b', 'c']");
  EXPECT_EQ(render("{{ messages | map(attribute='99999999999999999999') | "
                   "list | length }}"),
            "1");
  EXPECT_NE(
      errorOf([] { render("{{ '\\UFFFFFFFF' }}"); }).find("beyond U+10FFFF"),
      std::string::npos);
  // Trees and values nested without end, a namespace holding itself.
  std::string chain = "{{ 1";
  for (int k = 0; k < 20000; ++k)
    chain += "+1";
  EXPECT_NE(errorOf([&] {
              render(chain + " }}");
            }).find("expression nested too deeply"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              render("{% set ns = namespace(a=[]) %}{% for i in range(100000) "
                     "%}{% set ns.a = [ns.a] %}{% endfor %}{{ ns.a }}");
            }).find("a value nests more than 256 deep"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              render("{% set ns = namespace() %}{% set ns.x = ns %}{{ ns }}");
            }).find("contains itself"),
            std::string::npos);
  EXPECT_EQ(render("{% set ns = namespace() %}{% set ns.x = ns %}ok"), "ok");
  // Work and memory: a step budget, sizes counted in bytes.
  EXPECT_NE(errorOf([] {
              render("{% for a in range(100000) %}{% for b in range(100000) "
                     "%}{% endfor %}{% endfor %}");
            }).find("steps"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              render("{% set s = 'x' * 16000000 %}{{ ([s] * 1000) | length }}");
            }).find("grows past 16 MiB"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              render("{% set a = [1] * 1000 %}{% set b = [a] * 1000 %}{% set c "
                     "= [b] * 1000 %}{{ c }}");
            }).find("grows past 16 MiB"),
            std::string::npos);
  EXPECT_NE(errorOf([] {
              render("{{ 'a' | center(9223372036854775807) }}");
            }).find("grows past 16 MiB"),
            std::string::npos);
  // A JSON object of 40000 keys (its keys indexed).
  std::string json = R"({"messages": [])";
  for (int k = 0; k < 40000; ++k)
    json += ", \"k" + std::to_string(k) + "\": " + std::to_string(k);
  EXPECT_EQ(ChatTemplate("{{ k39999 }}").renderJson(json + "}", {}), "39999");
}

TEST(ChatTemplate, ReadsJsonConversations) {
  const ChatTemplate t("{% for m in messages %}{{ m.role }}:{{ m.content }}"
                       "|{{ m.n }}|{{ m | tojson }}\n{% endfor %}{{ tools "
                       "| length }}{{ add_generation_prompt }}");
  // Surrogate pairs, integers beyond 64 bits kept as written, other fields
  // and variables, add_generation_prompt from the object.
  EXPECT_EQ(
      t.renderJson(R"({"messages": [{"role": "user", "content": )"
                   R"("\ud83d\ude00 \u00e9", "n": 123456789012345678901234}],)"
                   R"( "tools": [1, 2], "add_generation_prompt": false})",
                   {}),
      "user:\xF0\x9F\x98\x80 \xC3\xA9|123456789012345678901234|"
      "{\"role\": \"user\", \"content\": \"\xF0\x9F\x98\x80 \xC3\xA9\", "
      "\"n\": 123456789012345678901234}\n2False");
  EXPECT_EQ(errorOf([&] { t.renderJson("[{\"role\": \"user\"", {}); }),
            "chat messages: malformed JSON at offset 16: expected ',' or '}'");
  EXPECT_EQ(errorOf([&] { t.renderJson("{\"tools\": []}", {}); }),
            "chat messages: the JSON object has no \"messages\" array");
  EXPECT_EQ(errorOf([&] { t.renderJson("[1]", {}); }),
            "chat messages: every message must be an object with a \"role\"");
  EXPECT_EQ(errorOf([&] { t.renderJson("[] x", {}); }),
            "chat messages: malformed JSON at offset 3: unexpected text after "
            "the JSON value");
}

TEST(ChatTemplate, StrftimeNowFormatsTheLocalTime) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char want[64];
  std::strftime(want, sizeof want, "%Y", &tm);
  std::string got = render("{{ strftime_now('%Y') }}");
  // (A year boundary between the two reads would change it.)
  EXPECT_TRUE(got == want || std::stoi(got) == std::stoi(want) + 1) << got;
}

std::vector<std::string> testTemplates() {
  std::vector<std::string> out;
  const std::string dir =
      loom::test::sourceDir() + "/test/tools/loom-run/Inputs/chat/templates";
  for (const auto &entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
  }
  return out;
}

TEST(ChatTemplate, RandomMutationsRenderOrFailCleanly) {
  const std::vector<std::string> sources = testTemplates();
  ASSERT_GE(sources.size(), 10u);
  const std::string conversation =
      R"({"messages": [{"role": "system", "content": "S"}, {"role": "user",)"
      R"( "content": "U"}, {"role": "assistant", "content": "A", "tool_calls":)"
      R"( [{"function": {"name": "f", "arguments": {"x": 1}}}]}, {"role":)"
      R"( "tool", "content": "T"}], "tools": [{"name": "f"}]})";
  // Bytes a mutation inserts: Jinja's syntax, whitespace, quotes, digits.
  const std::string alphabet = "{}%#-+()[]|.,:~=!<>'\"\\ \n\tifnotandor0129x";
  std::mt19937 rng(20261127);
  int rendered = 0, refused = 0;
  for (int n = 0; n < 3000; ++n) {
    std::string s = sources[n % sources.size()];
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      size_t at = rng() % s.size();
      switch (rng() % 3) {
      case 0:
        s.erase(at, 1 + rng() % 8);
        break;
      case 1:
        s.insert(at, 1, alphabet[rng() % alphabet.size()]);
        break;
      default:
        s[at] = alphabet[rng() % alphabet.size()];
      }
    }
    try {
      ChatTemplate(s).renderJson(conversation, {"<s>", "</s>", true});
      ++rendered;
    } catch (const loom::Error &e) {
      EXPECT_EQ(std::string(e.what()).rfind("chat template line ", 0), 0u)
          << e.what();
      ++refused;
    }
  }
  // Both outcomes occur: the mutations reach past the parser.
  EXPECT_GT(rendered, 100);
  EXPECT_GT(refused, 100);
}

} // namespace
