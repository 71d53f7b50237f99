"""Tools the policy's LLM can call during a turn.

- declared.py: Tool (typed arguments, what it does) and ToolContext (what it may use);
- builtin.py: time, dice, choose, set_expression, switch_scene, remember, recall,
  describe_view;
- runner.py: run a round of calls with time limits, publish them as tool.event;
- wire.py: calls and results in messages, per server (OpenAI, Ollama, llama.cpp).
"""
