/** A field's proto name from its generated TypeScript name: taskId -> task_id. */
export function protoFieldName(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
