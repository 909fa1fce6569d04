"""Pydantic models for every request and response of the OpenAI-compatible API.

Shapes follow openai/openai-openapi ``components.schemas`` (CreateCompletionRequest,
CreateChatCompletionRequest, CreateEmbeddingRequest and their responses). Imports only pydantic
and the standard library.

Requests accept unknown fields (``extra="allow"``); the server logs them and names them in the
``x-hologram-ignored-params`` response header. Request fields are strictly typed: a string
where a number belongs is a 400, not a silent conversion.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_serializer,
)

# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------

MAX_N = 128
MAX_STOP = 4
MAX_EMBEDDING_INPUTS = 2048

Number = StrictFloat | StrictInt
TokenId = StrictInt
TokenArray = Annotated[list[TokenId], Field(min_length=1)]


class RequestModel(BaseModel):
    """Base of every request: unknown fields are kept (and reported), types are strict."""

    model_config = ConfigDict(extra="allow", strict=True)

    def unknown_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class StreamOptions(RequestModel):
    include_usage: StrictBool | None = None
    include_obfuscation: StrictBool | None = None


class JSONSchemaFormat(RequestModel):
    """``response_format.json_schema`` (OpenAI's ResponseFormatJsonSchema)."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(RequestModel):
    """``response_format``: OpenAI's ``text``, ``json_object`` and ``json_schema``, plus the
    hologram extensions ``{"type": "grammar", "grammar": "<Lark grammar>"}`` and
    ``{"type": "regex", "regex": "<pattern>"}``."""

    type: Literal["text", "json_object", "json_schema", "grammar", "regex"]
    json_schema: JSONSchemaFormat | None = None
    grammar: StrictStr | None = None
    regex: StrictStr | None = None


def _temperature() -> Any:
    return Field(default=None, ge=0.0, le=2.0, allow_inf_nan=False)


class SamplingFields(RequestModel):
    """Sampling fields shared by completions and chat completions (plus llama.cpp extras)."""

    model: StrictStr | None = None
    temperature: Annotated[Number | None, _temperature()] = None
    top_p: Annotated[Number | None, Field(default=None, gt=0.0, le=1.0, allow_inf_nan=False)] = (
        None
    )
    n: Annotated[StrictInt | None, Field(default=None, ge=1, le=MAX_N)] = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOP)] | None = None
    seed: Annotated[StrictInt | None, Field(default=None, ge=0, le=2**64 - 1)] = None
    presence_penalty: Annotated[
        Number | None, Field(default=None, ge=-2.0, le=2.0, allow_inf_nan=False)
    ] = None
    frequency_penalty: Annotated[
        Number | None, Field(default=None, ge=-2.0, le=2.0, allow_inf_nan=False)
    ] = None
    logit_bias: dict[StrictStr, Annotated[Number, Field(ge=-100.0, le=100.0)]] | None = None
    user: StrictStr | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    # extras (llama.cpp / vLLM)
    top_k: Annotated[StrictInt | None, Field(default=None, ge=-1, le=2**31 - 1)] = None
    min_p: Annotated[Number | None, Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)] = (
        None
    )
    repeat_penalty: Annotated[
        Number | None, Field(default=None, gt=0.0, le=10.0, allow_inf_nan=False)
    ] = None
    ignore_eos: StrictBool | None = None
    #: Structured output (chat completions as OpenAI; completions as a vLLM-style extension).
    response_format: ResponseFormat | None = None


class CompletionRequest(SamplingFields):
    prompt: StrictStr | list[StrictStr] | TokenArray | list[TokenArray]
    max_tokens: Annotated[StrictInt | None, Field(default=None, ge=1)] = None
    logprobs: Annotated[StrictInt | None, Field(default=None, ge=0, le=5)] = None
    echo: StrictBool | None = None
    best_of: Annotated[StrictInt | None, Field(default=None, ge=0, le=20)] = None
    suffix: StrictStr | None = None
    #: hologram extension: tokenize control-token text in the prompt (``<|im_start|>``) as
    #: those control tokens. Off by default: prompt text is plain text.
    parse_special: StrictBool | None = None


class TextContentPart(RequestModel):
    type: StrictStr
    text: StrictStr | None = None


#: OpenAI's rule for function names.
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionCallIn(RequestModel):
    name: StrictStr
    arguments: StrictStr


class ToolCallIn(RequestModel):
    """A call an earlier assistant turn made (ChatCompletionMessageToolCall)."""

    id: StrictStr
    type: Literal["function"]
    function: FunctionCallIn


class ChatMessageIn(RequestModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextContentPart] | None = None
    name: StrictStr | None = None
    #: assistant turns: the calls it made (its content may then be null)
    tool_calls: list[ToolCallIn] | None = None
    #: tool turns: the call this is the result of
    tool_call_id: StrictStr | None = None


class FunctionDefinition(RequestModel):
    """FunctionObject: ``parameters`` is a JSON Schema (an object)."""

    name: Annotated[StrictStr, Field(pattern=FUNCTION_NAME)]
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class ChatTool(RequestModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(RequestModel):
    name: StrictStr


class NamedToolChoice(RequestModel):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    max_tokens: Annotated[StrictInt | None, Field(default=None, ge=1)] = None
    max_completion_tokens: Annotated[StrictInt | None, Field(default=None, ge=1)] = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt | None, Field(default=None, ge=0, le=20)] = None
    tools: list[ChatTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None


class EmbeddingRequest(RequestModel):
    model: StrictStr | None = None
    input: (
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
        | Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[list[TokenArray], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[StrictInt | None, Field(default=None, ge=1)] = None
    user: StrictStr | None = None


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


class ResponseModel(BaseModel):
    """Base of every response. Fields named in ``omit_if_none`` are left out when None
    (the schema makes them optional but not nullable); every other field is always present."""

    model_config = ConfigDict(extra="forbid")
    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in self.omit_if_none:
            if data.get(key, 0) is None:
                del data[key]
        return data

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ErrorInfo(ResponseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(ResponseModel):
    error: ErrorInfo


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # hologram extensions (capability discovery; the sampling defaults in force, each
    # {"value", "source": "flag" | "gguf" | "default"}, for models that generate)
    meta: dict[str, Any] | None = None
    sampling_defaults: dict[str, dict[str, Any]] | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"meta", "sampling_defaults"})


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class PromptTokensDetails(ResponseModel):
    cached_tokens: int = 0


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class CompletionLogprobs(ResponseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(ResponseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length", "content_filter"] | None


class CompletionResponse(ResponseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"usage", "system_fingerprint"})


class TopLogprobOut(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprobOut]


class ChoiceLogprobs(ResponseModel):
    content: list[TokenLogprobOut] | None
    refusal: list[TokenLogprobOut] | None = None


class FunctionCallOut(ResponseModel):
    name: str
    #: JSON text
    arguments: str


class ToolCallOut(ResponseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatMessageOut(ResponseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"tool_calls"})


class ChatChoice(ResponseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChoiceLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class ChatCompletionResponse(ResponseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"system_fingerprint"})


class ChatDelta(ResponseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"role", "content"})


class ChatChunkChoice(ResponseModel):
    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"] | None


class ChatCompletionChunk(ResponseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    #: Present (null, then the totals on the last chunk) only with include_usage.
    usage: Usage | None = None
    include_usage: bool = Field(default=False, exclude=True)

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("system_fingerprint") is None:
            data.pop("system_fingerprint", None)
        if not self.include_usage:
            data.pop("usage", None)
        return data


class EmbeddingData(ResponseModel):
    index: int
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str


class EmbeddingUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(ResponseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class HealthResponse(ResponseModel):
    status: Literal["ok", "loading", "shutting_down", "error"]
    models: list[str]
